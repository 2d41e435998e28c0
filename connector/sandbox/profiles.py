"""Segment profiles for the synthetic org's people: identities, traits, identifies and events.

When the sandbox is generated with Segment enabled, most leads are also known to the CDP, as one
profile with a user id (if they signed up to the product), one or two emails (the lead's, sometimes
written differently, and sometimes a personal one), one or more anonymous ids (devices), and
traits. Their product usage exists only in Segment, and it enters the hidden model
(:func:`cdp_logit`), so scoring with CDP data measurably beats scoring without it.

The identity trap is deliberate: people try the product anonymously before they sign up, so much of
their early usage carries only an anonymous id. It counts for the lead only when every identity of
the person is resolved to it (the id graph), just as a converted lead's Tasks count only through
``ConvertedContactId``. Some people also browse from a device Segment never links (an
anonymous-only profile), and anonymous visitors who are no lead at all have profiles too.

Everything is vectorised and drawn from ``numpy.random.default_rng([seed, 20, chunk])``, so the
Salesforce side of the org is identical whether Segment is enabled or not (only the outcomes move
with the hidden model). ``docs/sandbox.md`` documents the model.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

DAY = 86_400
HOUR = 3_600
STREAM = 20
"""Random stream id of the Segment generator (the Salesforce generator uses 1..10)."""

# ---------------------------------------------------------------------------------------------
# Hidden model: the CDP term (documented in docs/sandbox.md; change both together).

CDP_WINDOWS = {
    "product_usage_14d": ("Feature Used", 14, None),
    "order_revenue_90d": ("Order Completed", 90, "revenue"),
}
"""Feature -> (event, days, summed property): events in [anchor_at - days, anchor_at), over every
identity of the person's profile; a count when the property is None, else the sum of it."""
W_USAGE_14D = 0.7
W_ORDER_90D = 0.35
CDP_OFFSET = -0.45
"""Keeps the positive rate near the Salesforce-only org's (the other two terms average ~0.45)."""


def cdp_logit(frame: pd.DataFrame) -> np.ndarray:
    """The CDP term of the hidden logit.

    Args:
        frame: columns ``product_usage_14d`` and ``order_revenue_90d``.

    Returns:
        ``-0.45 + 0.7 ln(1 + product_usage_14d) + 0.35 ln(1 + order_revenue_90d / 100)``.
    """
    usage = frame["product_usage_14d"].to_numpy(float)
    revenue = frame["order_revenue_90d"].to_numpy(float)
    return CDP_OFFSET + W_USAGE_14D * np.log1p(usage) + W_ORDER_90D * np.log1p(revenue / 100.0)


# ---------------------------------------------------------------------------------------------
# Behaviour constants (shape the data around the model).

P_PROFILE = 0.75  # leads the CDP knows
P_SIGNED_UP = 0.8  # of those, signed up to the product (have a user id)
P_EMAIL_VARIANT = 0.25  # the lead's email written differently (case, spaces) in Segment
P_SECOND_EMAIL = 0.15  # a second, personal email
P_SALESFORCE_ID = 0.2  # the profile carries the lead's Id as the salesforce_id trait
P_NO_EMAIL = 0.3  # of those with salesforce_id and a user id: no email on the profile at all
P_STRAY_DEVICE = 0.1  # a device Segment never linked: an anonymous-only profile
STRAY_SHARE = 0.3  # share of page views that go to the stray device
VISITORS_PER_LEAD = 0.15  # anonymous visitors who are no lead
TRIAL_DAYS = 10  # product usage starts this long before signing up (anonymous trial)
USAGE_SIGMA = 1.0
USAGE_RATE = 0.015  # Feature Used per day of activity, times the usage intensity
RAMP_USAGE = 4.0  # extra Feature Used in the days before the first campaign response
RAMP_TAU_DAYS = 5.0
ORDERS = 0.5  # Order Completed over the lifetime, times the intensity
RAMP_ORDERS = 0.6  # extra orders in the months before the first response
ORDER_TAU_DAYS = 30.0
PRODUCT_ADDED_RATE = 0.005
PAGE_VIEW_RATE = 0.03
EMAIL_CLICK_RATE = 0.005
P_ANONYMOUS_WITH_USER = 0.6  # identified events that also carry the device's anonymous id
PAGES = ("/pricing", "/product", "/docs", "/blog", "/customers", "/signup")
FEATURES = ("dashboards", "alerts", "api", "exports", "sso", "workflows")
SKUS = ("starter-seat", "team-seat", "api-pack", "storage-100", "support-plus")
CAMPAIGNS = ("newsletter", "product-update", "webinar-invite", "case-study")

SCHEMA = (
    # kind: person (a lead's profile), stray (a device never linked), visitor (no lead),
    # api (created by a Tracking API call).
    "CREATE TABLE seg_profile (profile_id TEXT PRIMARY KEY, lead_id TEXT, kind TEXT, "
    "created_at INTEGER, updated_at INTEGER)",
    # One identity belongs to one profile; emails are looked up case-insensitively (norm).
    "CREATE TABLE seg_identity (id_type TEXT, norm TEXT, id_value TEXT, profile_id TEXT, "
    "created_at INTEGER, message_id TEXT, PRIMARY KEY (id_type, norm))",
    "CREATE TABLE seg_trait (profile_id TEXT, name TEXT, value TEXT, updated_at INTEGER, "
    "PRIMARY KEY (profile_id, name))",
    "CREATE TABLE seg_event (seq INTEGER PRIMARY KEY, message_id TEXT UNIQUE, profile_id TEXT, "
    "event TEXT, user_id TEXT, anonymous_id TEXT, ts REAL, properties TEXT)",
    "CREATE TABLE seg_identify (seq INTEGER PRIMARY KEY, message_id TEXT UNIQUE, "
    "profile_id TEXT, user_id TEXT, anonymous_id TEXT, ts REAL, traits TEXT)",
    # Every message accepted by the Tracking API, for de-duplication on messageId.
    "CREATE TABLE seg_received (message_id TEXT PRIMARY KEY, type TEXT, received_at REAL, "
    "repeats INTEGER NOT NULL DEFAULT 0)",
)
INDEXES = (
    "CREATE INDEX seg_event_profile ON seg_event (profile_id, ts)",
    "CREATE INDEX seg_identity_profile ON seg_identity (profile_id)",
    "CREATE INDEX seg_identify_profile ON seg_identify (profile_id)",
)


@dataclass(frozen=True)
class People:
    """The lead-level arrays the CDP generator reads (indexed by lead number)."""

    ids: Sequence[str]
    email: Sequence[str]
    first: np.ndarray
    last: np.ndarray
    company: np.ndarray
    created: np.ndarray
    anchor_at: np.ndarray
    responds: np.ndarray
    number_from: int = 0
    """The org-wide number of the first of these leads (an org generated in shards numbers each
    shard's user ids and personal emails on from the earlier shards')."""


def _hex(rng: np.random.Generator, count: int, digits: int) -> list[str]:
    """Random lower-case hex strings (from two 64-bit draws each)."""
    high = rng.integers(0, 2**63, count, dtype=np.int64)
    low = rng.integers(0, 2**63, count, dtype=np.int64)
    return [
        f"{h:016x}{lo:016x}"[:digits] for h, lo in zip(high.tolist(), low.tolist(), strict=True)
    ]


def _uuid_like(rng: np.random.Generator, count: int) -> list[str]:
    raw = _hex(rng, count, 32)
    return [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}" for h in raw]


def _trunc_exponential(rng: np.random.Generator, tau: float, limit: np.ndarray) -> np.ndarray:
    """Draw Exp(tau) truncated to [0, limit] by inverting its CDF (limit may be 0)."""
    u = rng.random(len(limit))
    return -tau * np.log1p(-u * (-np.expm1(-limit / tau)))


def iso_time(seconds: float) -> str:
    """Render epoch seconds as Segment does: ``2025-05-01T10:00:00.000Z`` (UTC, milliseconds).

    Args:
        seconds: epoch seconds.

    Returns:
        The ISO 8601 text.
    """
    millis = round(float(seconds) * 1000)
    whole, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


class SegmentGenerator:
    """Generates the Segment side of the org, chunk by chunk, into the sandbox database.

    Args:
        conn: the database being generated (the caller commits).
        seed: generator seed.
        as_of: end of the generated history, epoch seconds.
    """

    def __init__(self, conn: sqlite3.Connection, seed: int, as_of: int) -> None:
        self.conn = conn
        self.seed = seed
        self.as_of = as_of
        self.event_seq = 0
        self.identify_seq = 0

    def chunk(self, chunk: int, people: People, low: int, high: int) -> dict[str, np.ndarray]:
        """Generate and write the profiles of leads [low, high) and some anonymous visitors.

        Args:
            chunk: chunk number (selects the random stream).
            people: lead-level arrays.
            low: first lead of the chunk.
            high: one past the last lead.

        Returns:
            Per lead of the chunk, the CDP counts of the hidden model (``CDP_WINDOWS``).
        """
        rng = np.random.default_rng([self.seed, STREAM, chunk])
        n = high - low
        lead = np.arange(low, high)
        created = people.created[low:high]
        has_profile = rng.random(n) < P_PROFILE
        signup_at = created + (rng.uniform(-20, 40, n) * DAY).astype(np.int64)
        signed = has_profile & (rng.random(n) < P_SIGNED_UP) & (signup_at <= self.as_of)
        salesforce_id = has_profile & (rng.random(n) < P_SALESFORCE_ID)
        no_email = salesforce_id & signed & (rng.random(n) < P_NO_EMAIL)
        variant = rng.random(n) < P_EMAIL_VARIANT
        variant_kind = rng.integers(0, 2, n)
        second = has_profile & ~no_email & (rng.random(n) < P_SECOND_EMAIL)
        devices = np.where(has_profile, 1 + rng.poisson(0.8, n), 0)
        stray = has_profile & (rng.random(n) < P_STRAY_DEVICE)
        intensity = np.exp(USAGE_SIGMA * rng.standard_normal(n) - USAGE_SIGMA**2 / 2)
        browsing = np.exp(0.8 * rng.standard_normal(n) - 0.32)

        person = np.flatnonzero(has_profile)
        profile_ids = _hex(rng, n, 24)
        device_total = int(devices.sum())
        device_ids = np.asarray(_uuid_like(rng, device_total), dtype=object)
        device_start = np.concatenate([[0], np.cumsum(devices)[:-1]])
        stray_ids = np.asarray(_uuid_like(rng, n), dtype=object)
        user_ids = np.asarray(
            [f"usr_{people.number_from + i + 1:07d}" for i in lead.tolist()], dtype=object
        )

        # -- events of people: (local lead, time, kind, property draw)
        usage_start = signup_at - TRIAL_DAYS * DAY
        active_days = np.maximum(self.as_of - usage_start, 0) / DAY
        base_n = rng.poisson(np.where(has_profile, USAGE_RATE * intensity * active_days, 0.0))
        base_lead = np.repeat(np.arange(n), base_n)
        base_t = usage_start[base_lead] + (
            rng.random(len(base_lead)) * (self.as_of - usage_start[base_lead])
        ).astype(np.int64)
        anchor_at = people.anchor_at[low:high]
        ramp_days = np.maximum(anchor_at - usage_start, 0) / DAY
        ramp_mean = np.where(
            has_profile & people.responds[low:high],
            RAMP_USAGE * intensity * -np.expm1(-ramp_days / RAMP_TAU_DAYS),
            0.0,
        )
        ramp_n = rng.poisson(ramp_mean)
        ramp_lead = np.repeat(np.arange(n), ramp_n)
        before = _trunc_exponential(rng, RAMP_TAU_DAYS, ramp_days[ramp_lead])
        ramp_t = anchor_at[ramp_lead] - np.ceil(before * DAY).astype(np.int64)
        usage_lead = np.concatenate([base_lead, ramp_lead])
        usage_t = np.concatenate([base_t, ramp_t])

        life = np.maximum(self.as_of - signup_at, 0) / DAY
        order_n = rng.poisson(np.where(signed, ORDERS * intensity, 0.0))
        order_lead = np.repeat(np.arange(n), order_n)
        order_t = signup_at[order_lead] + (rng.random(len(order_lead)) * life[order_lead] * DAY)
        order_ramp_days = np.maximum(anchor_at - signup_at, 0) / DAY
        order_ramp_n = rng.poisson(
            np.where(
                signed & people.responds[low:high],
                RAMP_ORDERS * intensity * -np.expm1(-order_ramp_days / ORDER_TAU_DAYS),
                0.0,
            )
        )
        order_ramp_lead = np.repeat(np.arange(n), order_ramp_n)
        order_before = _trunc_exponential(rng, ORDER_TAU_DAYS, order_ramp_days[order_ramp_lead])
        order_ramp_t = anchor_at[order_ramp_lead] - np.ceil(order_before * DAY).astype(np.int64)
        order_lead = np.concatenate([order_lead, order_ramp_lead])
        order_t = np.concatenate([order_t.astype(np.int64), order_ramp_t])
        revenue = np.round(rng.lognormal(np.log(120.0), 0.7, len(order_lead)), 2)

        added_n = rng.poisson(
            np.where(has_profile, PRODUCT_ADDED_RATE * intensity * active_days, 0)
        )
        added_lead = np.repeat(np.arange(n), added_n)
        added_t = usage_start[added_lead] + (
            rng.random(len(added_lead)) * (self.as_of - usage_start[added_lead])
        ).astype(np.int64)

        browse_start = created - 30 * DAY
        browse_days = (self.as_of - browse_start) / DAY
        view_n = rng.poisson(np.where(has_profile, PAGE_VIEW_RATE * browsing * browse_days, 0.0))
        view_lead = np.repeat(np.arange(n), view_n)
        view_t = browse_start[view_lead] + (
            rng.random(len(view_lead)) * (self.as_of - browse_start[view_lead])
        ).astype(np.int64)
        view_stray = stray[view_lead] & (rng.random(len(view_lead)) < STRAY_SHARE)

        email_days = (self.as_of - created) / DAY
        click_n = rng.poisson(np.where(has_profile & ~no_email, EMAIL_CLICK_RATE * email_days, 0))
        click_lead = np.repeat(np.arange(n), click_n)
        click_t = created[click_lead] + (
            rng.random(len(click_lead)) * (self.as_of - created[click_lead])
        ).astype(np.int64)

        kinds = ("Feature Used", "Order Completed", "Product Added", "Page Viewed", "Email Clicked")
        ev_lead = np.concatenate([usage_lead, order_lead, added_lead, view_lead, click_lead])
        ev_t = np.concatenate([usage_t, order_t, added_t, view_t, click_t]).astype(np.int64)
        ev_kind = np.concatenate(
            [
                np.full(len(usage_lead), 0),
                np.full(len(order_lead), 1),
                np.full(len(added_lead), 2),
                np.full(len(view_lead), 3),
                np.full(len(click_lead), 4),
            ]
        )
        ev_revenue = np.concatenate(
            [
                np.zeros(len(usage_lead)),
                revenue,
                np.zeros(len(ev_lead) - len(usage_lead) - len(revenue)),
            ]
        )
        ev_stray = np.concatenate(
            [
                np.zeros(len(ev_lead) - len(view_lead) - len(click_lead), bool),
                view_stray,
                np.zeros(len(click_lead), bool),
            ]
        )
        keep = (ev_t <= self.as_of) & (ev_t >= self.as_of - 900 * DAY)
        ev_lead, ev_t, ev_kind, ev_revenue, ev_stray = (
            a[keep] for a in (ev_lead, ev_t, ev_kind, ev_revenue, ev_stray)
        )
        order = np.lexsort((ev_kind, ev_t))
        ev_lead, ev_t, ev_kind, ev_revenue, ev_stray = (
            a[order] for a in (ev_lead, ev_t, ev_kind, ev_revenue, ev_stray)
        )

        # Hidden-model counts: every event of the person's (linkable) profile in the window.
        counts: dict[str, np.ndarray] = {}
        for name, (event, days, prop) in CDP_WINDOWS.items():
            kind = kinds.index(event)
            before_anchor = anchor_at[ev_lead] - ev_t
            mask = (
                (ev_kind == kind) & ~ev_stray & (before_anchor > 0) & (before_anchor <= days * DAY)
            )
            weights = ev_revenue[mask] if prop else None
            counts[name] = np.bincount(ev_lead[mask], weights=weights, minlength=n)
            if prop is None:
                counts[name] = counts[name].astype(np.int64)
            else:
                counts[name] = np.round(counts[name], 2)

        # Identity of each event: the user id once signed up, else a device of the person.
        identified = signed[ev_lead] & (ev_t >= signup_at[ev_lead])
        device_pick = device_start[ev_lead] + (
            rng.random(len(ev_lead)) * np.maximum(devices[ev_lead], 1)
        ).astype(np.int64)
        anon = np.where(
            devices[ev_lead] > 0, device_ids[np.minimum(device_pick, device_total - 1)], None
        )
        with_anon = ~identified | (rng.random(len(ev_lead)) < P_ANONYMOUS_WITH_USER)
        user_col = np.where(identified & ~ev_stray, user_ids[ev_lead], None)
        anon_col = np.where(ev_stray, stray_ids[ev_lead], np.where(with_anon, anon, None))
        profile_col = np.where(
            ev_stray,
            np.char.add("use_s", np.asarray(profile_ids, dtype=object)[ev_lead].astype(str)),
            np.char.add("use_", np.asarray(profile_ids, dtype=object)[ev_lead].astype(str)),
        )
        feature = rng.integers(0, len(FEATURES), len(ev_lead))
        page = rng.integers(0, len(PAGES), len(ev_lead))
        sku = rng.integers(0, len(SKUS), len(ev_lead))
        campaign = rng.integers(0, len(CAMPAIGNS), len(ev_lead))
        properties = []
        for k, f, p, s, c, r in zip(
            ev_kind.tolist(),
            feature.tolist(),
            page.tolist(),
            sku.tolist(),
            campaign.tolist(),
            ev_revenue.tolist(),
            strict=True,
        ):
            if k == 0:
                properties.append(f'{{"feature":"{FEATURES[f]}"}}')
            elif k == 1:
                properties.append(f'{{"revenue":{r},"currency":"USD"}}')
            elif k == 2:
                properties.append(f'{{"sku":"{SKUS[s]}"}}')
            elif k == 3:
                properties.append(f'{{"path":"{PAGES[p]}"}}')
            else:
                properties.append(f'{{"campaign":"{CAMPAIGNS[c]}"}}')

        events = {
            "profile_id": profile_col.tolist(),
            "event": np.asarray(kinds, dtype=object)[ev_kind].tolist(),
            "user_id": user_col.tolist(),
            "anonymous_id": anon_col.tolist(),
            "ts": ev_t.tolist(),
            "properties": properties,
        }
        self._write_people(
            people,
            low,
            person,
            profile_ids,
            user_ids,
            signed,
            signup_at,
            salesforce_id,
            no_email,
            variant,
            variant_kind,
            second,
            devices,
            device_ids,
            device_start,
            stray,
            stray_ids,
        )
        self._write_events(events)
        self._visitors(rng, chunk, n)
        return counts

    # -- writing -------------------------------------------------------------------------------

    def _write_people(
        self,
        people: People,
        low: int,
        person: np.ndarray,
        profile_ids: list[str],
        user_ids: np.ndarray,
        signed: np.ndarray,
        signup_at: np.ndarray,
        salesforce_id: np.ndarray,
        no_email: np.ndarray,
        variant: np.ndarray,
        variant_kind: np.ndarray,
        second: np.ndarray,
        devices: np.ndarray,
        device_ids: np.ndarray,
        device_start: np.ndarray,
        stray: np.ndarray,
        stray_ids: np.ndarray,
    ) -> None:
        profiles: list[tuple[Any, ...]] = []
        identities: list[tuple[Any, ...]] = []
        traits: list[tuple[Any, ...]] = []
        identifies: list[tuple[Any, ...]] = []
        for i in person.tolist():
            g = low + i
            pid = f"use_{profile_ids[i]}"
            created = int(people.created[g])
            first_seen = min(created, int(signup_at[i])) if signed[i] else created
            lead_email = str(people.email[g])
            email = None
            if not no_email[i]:
                email = lead_email
                if variant[i]:
                    local, _, domain = lead_email.partition("@")
                    email = (
                        f"{local.title()}@{domain}"
                        if variant_kind[i] == 0
                        else f" {local}@{domain.upper()} "
                    )
            first, last = str(people.first[g]), str(people.last[g])
            profiles.append((pid, people.ids[g], "person", first_seen, first_seen))
            if signed[i]:
                identities.append(("user_id", user_ids[i], user_ids[i], pid, int(signup_at[i])))
            if email is not None:
                identities.append(("email", email.strip().lower(), email, pid, first_seen))
            for d in range(int(devices[i])):
                device = device_ids[device_start[i] + d]
                identities.append(("anonymous_id", device, device, pid, first_seen))
            trait_values: dict[str, Any] = {
                "first_name": first,
                "last_name": last,
                "company": str(people.company[g]),
            }
            if email is not None:
                trait_values["email"] = email
            if signed[i]:
                trait_values["plan"] = "trial"
            if salesforce_id[i]:
                trait_values["salesforce_id"] = people.ids[g]
            for name, value in trait_values.items():
                if name == "email" and second[i]:
                    # the personal email is identified later: the trait holds the latest email
                    value = f"{first}.{last}.{people.number_from + g + 1}@mail.example".lower()
                traits.append((pid, name, json.dumps(value), first_seen))
            # identify at sign-up (user id + first device) or at the first form fill (device only)
            device0 = device_ids[device_start[i]]
            at = int(signup_at[i]) if signed[i] else created + HOUR
            identifies.append(
                (
                    pid,
                    user_ids[i] if signed[i] else None,
                    device0,
                    at,
                    json.dumps(trait_values, separators=(",", ":")),
                )
            )
            if second[i]:
                other = f"{first}.{last}.{people.number_from + g + 1}@mail.example".lower()
                later = at + int((self.as_of - at) * 0.5) if self.as_of > at else at
                identities.append(("email", other, other, pid, later))
                identifies.append(
                    (
                        pid,
                        user_ids[i] if signed[i] else None,
                        device0,
                        later,
                        json.dumps({"email": other}, separators=(",", ":")),
                    )
                )
            if stray[i]:
                spid = f"use_s{profile_ids[i]}"
                profiles.append((spid, None, "stray", created, created))
                identities.append(
                    ("anonymous_id", stray_ids[i], stray_ids[i], spid, created - 30 * DAY)
                )
        self.conn.executemany("INSERT INTO seg_profile VALUES (?, ?, ?, ?, ?)", profiles)
        self.conn.executemany("INSERT INTO seg_identity VALUES (?, ?, ?, ?, ?, NULL)", identities)
        self.conn.executemany("INSERT INTO seg_trait VALUES (?, ?, ?, ?)", traits)
        rows = []
        for pid, user, device, at, body in identifies:
            self.identify_seq += 1
            rows.append(
                (self.identify_seq, f"gen-i{self.identify_seq:09d}", pid, user, device, at, body)
            )
        self.conn.executemany("INSERT INTO seg_identify VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _write_events(self, events: dict[str, list[Any]]) -> None:
        count = len(events["ts"])
        seqs = range(self.event_seq + 1, self.event_seq + count + 1)
        self.event_seq += count
        self.conn.executemany(
            "INSERT INTO seg_event VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            zip(
                seqs,
                (f"gen-e{s:09d}" for s in seqs),
                events["profile_id"],
                events["event"],
                events["user_id"],
                events["anonymous_id"],
                events["ts"],
                events["properties"],
                strict=True,
            ),
        )

    def _visitors(self, rng: np.random.Generator, chunk: int, n: int) -> None:
        """Anonymous visitors who never became leads: anonymous-only profiles that browse."""
        count = round(VISITORS_PER_LEAD * n)
        if count == 0:
            return
        ids = _hex(rng, count, 24)
        anon = _uuid_like(rng, count)
        first = self.as_of - 540 * DAY + (rng.random(count) * 540 * DAY).astype(np.int64)
        profiles = [
            (f"use_v{ids[i]}", None, "visitor", int(first[i]), int(first[i])) for i in range(count)
        ]
        identities = [
            ("anonymous_id", anon[i], anon[i], f"use_v{ids[i]}", int(first[i]))
            for i in range(count)
        ]
        self.conn.executemany("INSERT INTO seg_profile VALUES (?, ?, ?, ?, ?)", profiles)
        self.conn.executemany("INSERT INTO seg_identity VALUES (?, ?, ?, ?, ?, NULL)", identities)
        views = rng.poisson(5.0, count)
        visitor = np.repeat(np.arange(count), views)
        ts = first[visitor] + (rng.random(len(visitor)) * (self.as_of - first[visitor])).astype(
            np.int64
        )
        page = rng.integers(0, len(PAGES), len(visitor))
        self._write_events(
            {
                "profile_id": [f"use_v{ids[v]}" for v in visitor.tolist()],
                "event": ["Page Viewed"] * len(visitor),
                "user_id": [None] * len(visitor),
                "anonymous_id": [anon[v] for v in visitor.tolist()],
                "ts": ts.tolist(),
                "properties": [f'{{"path":"{PAGES[p]}"}}' for p in page.tolist()],
            }
        )


def export_segment(conn: sqlite3.Connection, directory: Any) -> dict[str, Any]:
    """Write the CDP history as a warehouse / Profiles Sync export: three JSON-lines files.

    ``tracks.jsonl`` and ``identifies.jsonl`` hold raw Segment messages (the shape of the Tracking
    API and of S3 archives); ``id_graph.jsonl`` holds one row per identity of every profile
    (``canonical_segment_id``, ``external_id_type``, ``external_id_value``, ``timestamp``), the
    shape of Profiles Sync's ``external_id_mapping``. Messages received by the sandbox's Tracking
    API are included.

    Args:
        conn: the sandbox database.
        directory: where to write (a ``pathlib.Path``; created when missing).

    Returns:
        ``{"tracks": path, "identifies": path, "id_graph": path}``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "tracks": directory / "tracks.jsonl",
        "identifies": directory / "identifies.jsonl",
        "id_graph": directory / "id_graph.jsonl",
    }
    with open(paths["tracks"], "w", encoding="utf-8") as out:
        cursor = conn.execute(
            "SELECT message_id, event, user_id, anonymous_id, ts, properties FROM seg_event "
            "ORDER BY seq"
        )
        while rows := cursor.fetchmany(50_000):
            out.write(
                "".join(
                    f'{{"type":"track","event":{json.dumps(event)},'
                    + (f'"userId":{json.dumps(user)},' if user else "")
                    + (f'"anonymousId":{json.dumps(anon)},' if anon else "")
                    + f'"timestamp":"{iso_time(ts)}","messageId":"{message}",'
                    + f'"properties":{properties}}}\n'
                    for message, event, user, anon, ts, properties in rows
                )
            )
    with open(paths["identifies"], "w", encoding="utf-8") as out:
        for message, user, anon, ts, traits in conn.execute(
            "SELECT message_id, user_id, anonymous_id, ts, traits FROM seg_identify ORDER BY seq"
        ):
            record: dict[str, Any] = {"type": "identify"}
            if user:
                record["userId"] = user
            if anon:
                record["anonymousId"] = anon
            record.update({"timestamp": iso_time(ts), "messageId": message})
            out.write(json.dumps(record)[:-1] + f',"traits":{traits}}}\n')
    with open(paths["id_graph"], "w", encoding="utf-8") as out:
        for profile, id_type, value, at in conn.execute(
            "SELECT profile_id, id_type, id_value, created_at FROM seg_identity "
            "ORDER BY profile_id, id_type, id_value"
        ):
            out.write(
                json.dumps(
                    {
                        "canonical_segment_id": profile,
                        "external_id_type": id_type,
                        "external_id_value": value,
                        "timestamp": iso_time(at),
                    }
                )
                + "\n"
            )
    return paths
