"""Synthetic Salesforce org with a known answer: leads, campaigns, activities and conversions.

The generator is deterministic for a given ``(seed, leads, as_of)``: every random draw comes from
a numpy ``Generator`` seeded with ``[seed, stream, chunk]``. It is vectorised, and it writes
activities chunk by chunk (``TASK_CHUNK_LEADS`` leads at a time). Records are held as compact
numpy arrays and become Python values only ``_INSERT_ROWS`` rows at a time (``_insert``); ids,
emails, company names and other lookups are made per batch. What stays proportional to the org
is a few hundred bytes of numpy arrays per lead (lead fields, outcomes, campaign memberships
while they are sorted), because later stages (conversions, memberships, the Lead rows) need
every lead's outcome: about 0.45 MB of peak RSS per 1,000 leads (docs/benchmarks.md, "Sandbox
generator memory (issue 17)"). Batch and chunk sizes change the memory, never a row.

The hidden model (``hidden_logit``) gives each anchored lead its probability of converting
within 30 days of its first campaign response. It reads only what Salesforce shows at the anchor:
firmographics and the marketing-engagement Task rows dated before the anchor. ``docs/sandbox.md``
documents the formula, the constants and the window rule.

As in a real org, converting a lead re-parents its activities to the new contact (``WhoId``) and
opportunity (``WhatId``) and stamps its campaign memberships with the contact
(https://help.salesforce.com/s/articleView?id=sf.leads_notes.htm).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from connector.sandbox.ids import make_id_array, make_ids
from connector.sandbox.profiles import CDP_WINDOWS, People, SegmentGenerator, cdp_logit
from connector.sandbox.reps import first_touch_times
from connector.sandbox.schema import (
    CAMPAIGN_TYPES,
    INDUSTRIES,
    LEAD_SOURCES,
    MARKETING_TASK_TYPES,
    OPPORTUNITY_STAGES,
    SALES_TASK_TYPES,
    SENIORITIES,
    get_object,
)
from connector.sandbox.truth import shard_stream, write_customers

GENERATOR_VERSION = "5"  # 2: Segment people (profiles.py); 3: customers and orders (truth.py)
# 4: reps' first touches follow their habits (reps.py); 5: orgs over SHARD_LEADS made in shards
DAY = 86_400
HOUR = 3_600
HISTORY_DAYS = 540
"""Leads are created over the 540 days before ``as_of``."""
LABEL_WINDOW_DAYS = 30
"""A lead is positive when it converts within 30 days of its anchor."""
TASK_CHUNK_LEADS = 20_000
"""Leads per activity chunk: bounds memory and fixes the random streams (part of determinism)."""
_INSERT_ROWS = 50_000
"""Rows turned into Python values and inserted at once (memory only: never changes a row)."""
SHARD_LEADS = 200_000
"""Leads generated together, with their companies, activities, conversions, memberships and
customers; a bigger org is made of shards of this many leads written one after the other, so the
generator's memory is that of one shard whatever the org's size. A shard holds its own companies
(leads of one company are in one shard), draws from its own random streams and continues the
previous shards' id sequences; every shard spans the whole history. Orgs of up to this many leads
are a single shard, generated exactly as before shards existed (part of "one seed, one org")."""

ProgressCallback = Callable[[str, int, int], None]


def _words(text: str) -> tuple[str, ...]:
    """Split a space-separated vocabulary into a tuple."""
    return tuple(text.split())


# ---------------------------------------------------------------------------------------------
# Hidden model (documented in docs/sandbox.md; change both together).

INTERCEPT = -2.35
INDUSTRY_EFFECT = {
    "Technology": 0.6,
    "Software": 0.7,
    "Financial Services": 0.33,
    "Healthcare": 0.0,
    "Manufacturing": -0.26,
    "Retail": -0.45,
    "Education": -0.78,
    "Government": -0.9,
    "Media": 0.05,
    "Telecommunications": 0.2,
    "Energy": -0.33,
    "Consulting": 0.0,
}
SENIORITY_EFFECT = {
    "C-Level": 0.52,
    "VP": 0.65,
    "Director": 0.4,
    "Manager": 0.0,
    "Individual Contributor": -0.7,
}
EMPLOYEE_BANDS = ("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5001+")
EMPLOYEE_BAND_LOWER = (1, 11, 51, 201, 1001, 5001)
EMPLOYEE_BAND_EFFECT = {
    "1-10": -0.9,
    "11-50": -0.4,
    "51-200": 0.0,
    "201-1000": 0.4,
    "1001-5000": 0.5,
    "5001+": 0.2,
}
LEAD_SOURCE_EFFECT = {
    "Web": 0.0,
    "Webinar": 0.45,
    "Trade Show": 0.2,
    "Partner Referral": 1.05,
    "Employee Referral": 1.25,
    "Paid Search": -0.13,
    "Content Syndication": -0.65,
    "Cold Outreach": -1.05,
}
REGION_EFFECT = {"NA": 0.33, "EU": 0.0, "APAC": -0.2, "LATAM": -0.5}
COUNTRY_REGION = {
    "United States": "NA",
    "Canada": "NA",
    "United Kingdom": "EU",
    "Germany": "EU",
    "France": "EU",
    "Netherlands": "EU",
    "Spain": "EU",
    "Sweden": "EU",
    "Australia": "APAC",
    "Japan": "APAC",
    "Singapore": "APAC",
    "India": "APAC",
    "Brazil": "LATAM",
    "Mexico": "LATAM",
    "Argentina": "LATAM",
}
ENGAGEMENT_WINDOWS = {
    "web_visits_7d": ("Web Visit", 7),
    "web_visits_30d": ("Web Visit", 30),
    "email_clicks_30d": ("Email Click", 30),
    "webinars_30d": ("Webinar", 30),
    "content_downloads_90d": ("Content Download", 90),
}
"""Feature -> (Task.Type, days): Tasks with CreatedDate in [anchor_at - days, anchor_at)."""
W_WEB_7D = 0.55
W_WEB_30D = 0.25
W_EMAIL_30D = 0.35
W_WEBINAR_30D = 0.5
W_CONTENT_90D = 0.25
SENIOR_LARGE_BONUS = 0.6
TINY_COLD_PENALTY = -0.5
TECH_ENGAGED_BONUS = 0.4
OLD_LEAD_PENALTY = -0.4
OLD_LEAD_DAYS = 180

ORGS = ("classic", "interacting", "drifting")
"""``classic``: the hidden model above (continuity of figures). ``interacting``: plus effects a
linear model cannot express. ``drifting``: the interacting org with a regime shift in its newest
``REGIME_DAYS`` days."""
# Interacting org: a webinar campaign that only works for one industry group and size band...
CAMPAIGN_FIT_INDUSTRIES = ("Healthcare", "Financial Services", "Manufacturing")
CAMPAIGN_FIT_BANDS = ("201-1000", "1001-5000", "5001+")
CAMPAIGN_FIT_BONUS = 2.4
# ...recent web visits that mean buying intent for senior titles and research for junior ones
# (the main 7-day effect is replaced by this crossing)...
SENIOR_ENGAGED_BONUS = 1.6
JUNIOR_ENGAGED_PENALTY = -1.2
ENGAGED_WEB_7D = 2
# ...and referrals that only convert at small companies.
SMALL_REFERRAL_BONUS = 1.2
LARGE_REFERRAL_PENALTY = -1.2
# Drifting org: anchors in the newest REGIME_DAYS days (before as_of) convert more often, and
# webinar-sourced leads flip from good to poor.
REGIME_DAYS = 200
REGIME_INTERCEPT_SHIFT = 1.2
REGIME_WEBINAR_SOURCE_SHIFT = -1.6
# Interacting orgs: deal amounts also depend on industry and seniority (x these factors).
AMOUNT_INDUSTRY = {"Financial Services": 1.8, "Technology": 1.4, "Software": 1.4, "Education": 0.5}
AMOUNT_SENIORITY = {"C-Level": 1.6, "VP": 1.3, "Individual Contributor": 0.6}

# ---------------------------------------------------------------------------------------------
# Behaviour constants (not part of the hidden model: they shape the data around it).

P_RESPOND = 0.83
RESPONSE_GAP_MIX = (0.25, 0.45, 0.30)  # same day / mean 25 days / mean 120 days
LATENT_SIGMA = 1.3
BASE_RATE_PER_DAY = 0.014
RAMP_EVENTS = 7.0
RAMP_TAU_DAYS = 6.0
POST_EVENTS = 2.0
POST_TAU_DAYS = 12.0
SYNC_SECONDS = 600  # marketing automation syncs activities every 10 minutes
MARKETING_TYPE_P = (0.55, 0.25, 0.08, 0.12)  # Web Visit, Email Click, Webinar, Content Download
P_FAST_FIRST_TOUCH = 0.7
P_LATE_CONVERSION = 0.08
P_UNANCHORED_CONVERSION = 0.02
P_DELETED = 0.01
CAMPAIGN_EVERY_DAYS = 15
CAMPAIGN_DAYS = 30

INDUSTRY_WEIGHTS = (0.14, 0.13, 0.1, 0.09, 0.09, 0.07, 0.06, 0.05, 0.06, 0.06, 0.06, 0.09)
BAND_WEIGHTS = (0.15, 0.22, 0.25, 0.2, 0.11, 0.07)
SENIORITY_WEIGHTS = (0.08, 0.14, 0.22, 0.28, 0.28)
LEAD_SOURCE_WEIGHTS = (0.22, 0.12, 0.08, 0.07, 0.05, 0.16, 0.14, 0.16)
COUNTRY_WEIGHTS = {
    "United States": 0.34,
    "Canada": 0.06,
    "United Kingdom": 0.1,
    "Germany": 0.07,
    "France": 0.05,
    "Netherlands": 0.03,
    "Spain": 0.03,
    "Sweden": 0.02,
    "Australia": 0.05,
    "Japan": 0.04,
    "Singapore": 0.03,
    "India": 0.06,
    "Brazil": 0.06,
    "Mexico": 0.04,
    "Argentina": 0.02,
}
REGIONS = ("NA", "EU", "APAC", "LATAM")
FUNCTIONS = (
    ("Engineering", "CTO", "Software Engineer"),
    ("Marketing", "CMO", "Marketing Specialist"),
    ("Sales", "CRO", "Account Executive"),
    ("Operations", "COO", "Operations Analyst"),
    ("Finance", "CFO", "Financial Analyst"),
    ("IT", "CIO", "Systems Administrator"),
    ("Product", "CPO", "Product Designer"),
    ("People", "CHRO", "HR Generalist"),
    ("Data", "CDO", "Data Analyst"),
    ("Security", "CISO", "Security Engineer"),
)
FUNCTION_WEIGHTS = (0.2, 0.14, 0.1, 0.1, 0.07, 0.12, 0.08, 0.04, 0.09, 0.06)
FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy "
    "Anthony Sandra Mark Ashley Paul Emily Steven Kimberly Andrew Donna Joshua Michelle Kevin "
    "Carol Brian Amanda George Melissa Timothy Deborah Ravi Priya Hiroshi Yuki Lucas Sofia "
    "Mateo Camila Lukas Emma Noah Olivia Liam Mia Wei Mei Arjun Ananya Diego Valentina Lars "
    "Ingrid"
)
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott "
    "Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter "
    "Roberts Muller Schmidt Schneider Fischer Dubois Moreau Laurent Rossi Bianchi Tanaka "
    "Suzuki Sato Kumar Sharma Patel Singh Silva Santos Oliveira Costa Andersson Johansson "
    "Larsen Jansen DeVries Kowalski Novak"
)
COMPANY_PREFIXES = _words(
    "Blue Red Green Silver Golden Bright Swift North South East West Summit Apex Vertex Prime "
    "Nova Stellar Quantum Atlas Orion Cedar Maple Oak Pine River Harbor Lake Stone Iron "
    "Copper Crystal Falcon Eagle Hawk Fox Wolf Bear Lion Tiger"
)
COMPANY_ROOTS = _words(
    "Data Cloud Logic Works Labs Point Path Bridge Gate Wave Stream Field Forge Line Grid "
    "Core Sphere Scale Signal Pulse Shift Spring Peak Ridge Rock Wind Star Sky Sun Moon Leaf "
    "Root Seed Trail Link Loop Mesh Node Port"
)
COMPANY_SUFFIXES = (
    "Systems",
    "Solutions",
    "Technologies",
    "Group",
    "Partners",
    "Industries",
    "Holdings",
    "Networks",
    "Analytics",
    "Inc",
)
CAMPAIGN_TOPICS = (
    "Scaling Data Teams",
    "Pipeline Acceleration",
    "AI in Revenue Ops",
    "Security Benchmarks",
    "Cloud Cost Control",
    "Customer 360",
    "Modern Analytics",
    "Buyer Intent Playbook",
)
WEB_PAGES = ("/pricing", "/product", "/customers", "/blog", "/docs", "/integrations", "/demo")
SALES_REPS = (
    ("Avery", "Chen", "NA"),
    ("Jordan", "Blake", "NA"),
    ("Taylor", "Reed", "NA"),
    ("Sophie", "Keller", "EU"),
    ("Luca", "Romano", "EU"),
    ("Emma", "Visser", "EU"),
    ("Kenji", "Mori", "APAC"),
    ("Aisha", "Rahman", "APAC"),
    ("Liam", "OConnor", "APAC"),
    ("Camila", "Rocha", "LATAM"),
    ("Diego", "Alvarez", "LATAM"),
    ("Valeria", "Ortiz", "LATAM"),
)
USERNAME_DOMAIN = "leadscore-sandbox.example"
INTEGRATION_USERNAME = f"integration@{USERNAME_DOMAIN}"


# ---------------------------------------------------------------------------------------------
# Hidden model


def employee_band(employees: Any) -> np.ndarray:
    """Map employee counts to band labels (``1-10`` ... ``5001+``); null counts map to ``51-200``.

    Args:
        employees: Array-like of NumberOfEmployees values.

    Returns:
        An object array of band labels.
    """
    values = pd.to_numeric(pd.Series(employees), errors="coerce").fillna(51).to_numpy(float)
    index = np.searchsorted(np.array(EMPLOYEE_BAND_LOWER[1:]), values, side="right")
    return np.array(EMPLOYEE_BANDS, dtype=object)[index]


def hidden_logit(frame: pd.DataFrame, org: str = "classic") -> np.ndarray:
    """Compute the hidden model's logit for each row.

    Args:
        frame: One row per lead with columns ``Industry``, ``Seniority__c``,
            ``NumberOfEmployees``, ``LeadSource``, ``Country``, the five engagement counts of
            ``ENGAGEMENT_WINDOWS`` and ``age_days`` (anchor_at minus CreatedDate, in days). When
            the org is generated with Segment, also the CDP counts of
            ``connector.sandbox.profiles.CDP_WINDOWS``, which add the CDP term. The drifting
            org also needs ``regime`` (1 for anchors in the newest ``REGIME_DAYS`` days).
        org: one of ``ORGS``.

    Returns:
        The logits, as a float array.
    """
    band = employee_band(frame["NumberOfEmployees"])
    employees = pd.to_numeric(frame["NumberOfEmployees"], errors="coerce").fillna(51).to_numpy()
    region = frame["Country"].map(COUNTRY_REGION)
    web7 = frame["web_visits_7d"].to_numpy(float)
    logit = (
        INTERCEPT
        + frame["Industry"].map(INDUSTRY_EFFECT).fillna(0.0).to_numpy(float)
        + frame["Seniority__c"].map(SENIORITY_EFFECT).fillna(0.0).to_numpy(float)
        + pd.Series(band).map(EMPLOYEE_BAND_EFFECT).to_numpy(float)
        + frame["LeadSource"].map(LEAD_SOURCE_EFFECT).fillna(0.0).to_numpy(float)
        + region.map(REGION_EFFECT).fillna(0.0).to_numpy(float)
        + W_WEB_7D * np.log1p(web7)
        + W_WEB_30D * np.log1p(frame["web_visits_30d"].to_numpy(float))
        + W_EMAIL_30D * np.log1p(frame["email_clicks_30d"].to_numpy(float))
        + W_WEBINAR_30D * (frame["webinars_30d"].to_numpy(float) >= 1)
        + W_CONTENT_90D * np.log1p(frame["content_downloads_90d"].to_numpy(float))
    )
    seniority = frame["Seniority__c"].to_numpy(object)
    senior = (seniority == "C-Level") | (seniority == "VP")
    logit += SENIOR_LARGE_BONUS * (senior & (employees >= 201))
    logit += TINY_COLD_PENALTY * ((employees <= 10) & (frame["LeadSource"] == "Cold Outreach"))
    industry = frame["Industry"].to_numpy(object)
    tech = (industry == "Technology") | (industry == "Software")
    logit += TECH_ENGAGED_BONUS * (tech & (web7 >= 3))
    logit += OLD_LEAD_PENALTY * (frame["age_days"].to_numpy(float) > OLD_LEAD_DAYS)
    if all(name in frame.columns for name in CDP_WINDOWS):
        # NULL counts (ground truth of an org generated without Segment) add nothing.
        logit += np.nan_to_num(cdp_logit(frame), nan=0.0)
    if org != "classic":
        logit += interaction_logit(frame, band, seniority, web7)
    if org == "drifting":
        regime = frame["regime"].to_numpy(float)
        webinar = (frame["LeadSource"] == "Webinar").to_numpy()
        logit += regime * (REGIME_INTERCEPT_SHIFT + REGIME_WEBINAR_SOURCE_SHIFT * webinar)
    return np.asarray(logit, dtype=float)


def interaction_logit(
    frame: pd.DataFrame, band: np.ndarray, seniority: np.ndarray, web7: np.ndarray
) -> np.ndarray:
    """The interacting org's extra terms (on top of the classic hidden model).

    Args:
        frame: as for :func:`hidden_logit`.
        band: employee bands of the rows.
        seniority: seniority of the rows.
        web7: web visits in the 7 days before the anchor.

    Returns:
        The added logit.
    """
    industry = frame["Industry"].to_numpy(object)
    webinar = frame["webinars_30d"].to_numpy(float) >= 1
    fit = np.isin(industry, CAMPAIGN_FIT_INDUSTRIES) & np.isin(band, CAMPAIGN_FIT_BANDS)
    engaged = web7 >= ENGAGED_WEB_7D
    senior = np.isin(seniority, ("C-Level", "VP"))
    junior = np.isin(seniority, ("Manager", "Individual Contributor"))
    source = frame["LeadSource"].to_numpy(object)
    referral = np.isin(source, ("Partner Referral", "Employee Referral"))
    small = np.isin(band, ("1-10", "11-50", "51-200"))
    return (
        CAMPAIGN_FIT_BONUS * (webinar & fit)
        - W_WEB_7D * np.log1p(web7)  # the main 7-day effect becomes the crossing below
        + SENIOR_ENGAGED_BONUS * (engaged & senior)
        + JUNIOR_ENGAGED_PENALTY * (engaged & junior)
        + SMALL_REFERRAL_BONUS * (referral & small)
        + LARGE_REFERRAL_PENALTY * (referral & ~small)
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function.

    Args:
        x: Logits.

    Returns:
        Probabilities.
    """
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# Helpers


Column = np.ndarray | Sequence[Any] | Callable[[slice], Sequence[Any]]
"""An ``_insert`` column: an array (converted to Python values one batch at a time), a sequence of
Python values, or a function giving the values of a slice of rows."""


def _insert(
    conn: sqlite3.Connection,
    sobject: str,
    columns: dict[str, Column],
    rows: int | None = None,
) -> None:
    """Insert column-oriented data into an object's table in batches of ``_INSERT_ROWS``.

    Python objects (an int, a float or a str per value, 30-80 bytes each) are made one batch at a
    time: whole columns of them were most of the generator's memory.

    Args:
        conn: The database.
        sobject: The object (table) name.
        columns: Field name -> values (see ``Column``); all of the same length.
        rows: The number of rows, required when every column is a function.
    """
    names = list(columns)
    lengths = {len(values) for values in columns.values() if not callable(values)}
    if rows is not None:
        lengths.add(rows)
    if len(lengths) > 1:
        raise ValueError(f"ragged columns for {sobject}: {lengths}")
    count = lengths.pop() if lengths else 0
    quoted = ", ".join(f'"{name}"' for name in names)
    sql = f'INSERT INTO "{sobject}" ({quoted}) VALUES ({", ".join("?" * len(names))})'
    for start in range(0, count, _INSERT_ROWS):
        part = slice(start, min(count, start + _INSERT_ROWS))
        conn.executemany(
            sql, zip(*(_batch(values, part) for values in columns.values()), strict=True)
        )


def _batch(values: Column, part: slice) -> Sequence[Any]:
    """One batch of a column as Python values (sqlite3 binds Python scalars only)."""
    if callable(values):
        return values(part)
    if isinstance(values, np.ndarray):
        return values[part].tolist()
    return values[part]


def _date_strings(epoch: np.ndarray) -> np.ndarray:
    """Render epoch seconds as ``YYYY-MM-DD`` strings (vectorised through a per-day table).

    Returns:
        An object array whose entries share one str per day (8 bytes a row, not a str each).
    """
    if len(epoch) == 0:
        return np.empty(0, dtype=object)
    days = np.asarray(epoch, dtype=np.int64) // DAY
    low = int(days.min())
    table = np.datetime_as_string(
        np.arange(low, int(days.max()) + 1).astype("datetime64[D]"), unit="D"
    ).astype(object)
    return table[days - low]


def _nullable(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An object array of ``values`` with None where ``mask`` is False."""
    result = np.asarray(values, dtype=object).copy()
    result[~mask] = None
    return result


def _pick(vocabulary: Sequence[str], index: np.ndarray) -> np.ndarray:
    """Vocabulary entries by index, as an object array sharing the vocabulary's strings."""
    return np.asarray(vocabulary, dtype=object)[index]


def _names(first: np.ndarray, last: np.ndarray) -> Callable[[slice], list[str]]:
    """A ``Name`` column made batch by batch from first and last names."""

    def column(part: slice) -> list[str]:
        return [f"{f} {s}" for f, s in zip(first[part].tolist(), last[part].tolist(), strict=True)]

    return column


def _lazy(make: Callable[..., Any], *arrays: np.ndarray) -> Callable[[slice], list[Any]]:
    """A column computed batch by batch: ``make`` of each array's slice for the batch."""

    def column(part: slice) -> list[Any]:
        values = make(*(array[part] for array in arrays))
        return values.tolist() if isinstance(values, np.ndarray) else list(values)

    return column


def _id_range(key_prefix: str, start: int) -> Callable[[slice], list[str]]:
    """A column of consecutive ids from sequence number ``start``, made batch by batch."""
    return lambda part: make_ids(key_prefix, start + part.start, part.stop - part.start)


def _id_column(leads: _Leads, index: np.ndarray) -> Callable[[slice], list[str]]:
    """A column of lead ids (``index`` into the leads) made batch by batch."""
    return lambda part: leads.id_strings(index[part]).tolist()


def _take(columns: dict[str, np.ndarray], index: np.ndarray) -> None:
    """Index every column in place, one at a time (each old column is freed as it goes)."""
    for name in list(columns):
        columns[name] = columns[name][index]


def _title_table() -> np.ndarray:
    """Titles by (seniority, function, head of): an object array of shape (5, functions, 2)."""
    table = np.empty((len(SENIORITIES), len(FUNCTIONS), 2), dtype=object)
    for func, (name, chief, individual) in enumerate(FUNCTIONS):
        for head in (0, 1):
            table[:, func, head] = (
                chief,
                f"VP {name}",
                f"Head of {name}" if head else f"Director of {name}",
                f"{name} Manager",
                individual,
            )
    return table


def _email_numbers(
    first: np.ndarray, last: np.ndarray, company: np.ndarray, domains: np.ndarray
) -> np.ndarray:
    """For each lead, how many earlier leads have the same ``first.last@domain`` address.

    Integer codes stand in for the address strings (a str per lead held for the whole run was a
    large part of the memory): equal locals and equal domains get equal codes, so the counting is
    exactly that of the strings.

    Args:
        first: index of each lead's first name in ``FIRST_NAMES``.
        last: index of each lead's last name in ``LAST_NAMES``.
        company: each lead's company.
        domains: each company's domain.

    Returns:
        The numbers (0 for the first lead with an address).
    """
    locals_: dict[str, int] = {}
    local_code = np.array(
        [
            [locals_.setdefault(f"{f}.{s}".lower(), len(locals_)) for s in LAST_NAMES]
            for f in FIRST_NAMES
        ],
        dtype=np.int64,
    )
    domain_codes: dict[str, int] = {}
    domain_code = np.array(
        [domain_codes.setdefault(d, len(domain_codes)) for d in domains.tolist()], dtype=np.int64
    )
    key = local_code[first, last] * max(1, len(domain_codes)) + domain_code[company]
    order = np.argsort(key, kind="stable")  # stable: numbered in lead order, like a cumcount
    ordered = key[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    numbers = np.empty(len(key), dtype=np.int64)
    numbers[order] = np.arange(len(key)) - run_start
    return numbers


def _trunc_exponential(rng: np.random.Generator, tau: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Draw Exp(tau) truncated to [0, limit] by inverting its CDF."""
    u = rng.random(len(tau))
    return -tau * np.log1p(-u * (-np.expm1(-limit / tau)))


@dataclass
class _Leads:
    """Lead-level arrays, indexed by lead number (creation order)."""

    ids: np.ndarray
    """``S18`` ids (18 bytes a lead): str objects are made per batch by :meth:`id_strings`."""
    created: np.ndarray
    company: np.ndarray
    first: np.ndarray
    last: np.ndarray
    email_number: np.ndarray
    """The number in the email of the 2nd, 3rd... lead with the same address (0: none)."""
    companies: _Companies
    title: np.ndarray
    seniority: np.ndarray
    source: np.ndarray
    owner: np.ndarray
    responds: np.ndarray
    anchor_at: np.ndarray
    anchored: np.ndarray
    anchor_campaign: np.ndarray
    member_created: np.ndarray
    response_at: np.ndarray
    latent: np.ndarray
    deleted: np.ndarray
    deleted_at: np.ndarray
    unanchored_conversion: np.ndarray

    def id_strings(self, index: slice | np.ndarray) -> np.ndarray:
        """The ids of some leads as an object array of str."""
        return self.ids[index].astype(str).astype(object)

    def emails(self, index: slice | np.ndarray) -> list[str]:
        """The emails of some leads: ``first.last@domain``, numbered from the second on."""
        out = []
        for first, last, domain, number in zip(
            self.first[index].tolist(),
            self.last[index].tolist(),
            self.companies.domains(self.company[index]).tolist(),
            self.email_number[index].tolist(),
            strict=True,
        ):
            local = f"{first}.{last}".lower()
            out.append(f"{local}{number}@{domain}" if number else f"{local}@{domain}")
        return out


@dataclass
class _Companies:
    """Company-level arrays (leads belong to companies; accounts are created per company)."""

    number: np.ndarray
    """Each company's place in the walk through prefix x root x suffix: its name and domain are
    made from it when they are written (:meth:`names`, :meth:`domains`), not held as strings."""
    industry: np.ndarray
    employees: np.ndarray
    revenue: np.ndarray
    country: np.ndarray

    def __len__(self) -> int:
        return len(self.number)

    def names(self, index: slice | np.ndarray) -> np.ndarray:
        """Company names, as an object array of str."""
        return np.array([_company_name(n)[0] for n in self.number[index].tolist()], dtype=object)

    def domains(self, index: slice | np.ndarray) -> np.ndarray:
        """Company email domains, as an object array of str."""
        return np.array([_company_name(n)[1] for n in self.number[index].tolist()], dtype=object)


def _company_name(number: int) -> tuple[str, str]:
    """The name and email domain of the company at ``number`` in the walk."""
    slots = len(COMPANY_PREFIXES) * len(COMPANY_ROOTS) * len(COMPANY_SUFFIXES)
    prefix = COMPANY_PREFIXES[number % len(COMPANY_PREFIXES)]
    root = COMPANY_ROOTS[(number // len(COMPANY_PREFIXES)) % len(COMPANY_ROOTS)]
    suffix_index = number // (len(COMPANY_PREFIXES) * len(COMPANY_ROOTS))
    suffix = COMPANY_SUFFIXES[suffix_index % len(COMPANY_SUFFIXES)]
    generation = number // slots
    tail = f" {generation + 1}" if generation else ""
    tld = ("com", "io", "net", "co")[suffix_index % 4]
    return (
        f"{prefix} {root} {suffix}{tail}",
        f"{prefix}{root}{suffix_index}{tail.strip()}.{tld}".lower(),
    )


@dataclass
class _Campaigns:
    ids: list[str]
    start: np.ndarray
    kind: np.ndarray


class _OrgGenerator:
    """Builds one synthetic org into an empty database."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        seed: int,
        n_leads: int,
        as_of: int,
        progress: ProgressCallback,
        segment: bool = False,
        org: str = "classic",
    ) -> None:
        if org not in ORGS:
            raise ValueError(f"org must be one of {', '.join(ORGS)}, not {org!r}")
        self.org = org
        self.conn = conn
        self.segment = SegmentGenerator(conn, seed, as_of) if segment else None
        self.seed = seed
        self.total = n_leads
        self.n = n_leads
        """Leads of the shard being generated."""
        self.as_of = as_of
        # where the shard being generated starts in the org's numbering (see SHARD_LEADS)
        self.shard = 0
        self.first_lead = 0
        self.first_company = 0
        self.first_chunk = 0
        self.contacts = 0
        self.accounts = 0
        self.members_written = 0
        self.task_seq = 1
        self.event_seq = 1
        self.customers = 0
        self.orders = 0
        self.start = as_of - HISTORY_DAYS * DAY
        self.progress = progress
        self.countries = tuple(COUNTRY_WEIGHTS)
        self.country_region = np.array(
            [REGIONS.index(COUNTRY_REGION[c]) for c in self.countries], dtype=np.int64
        )

    def rng(self, stream: int, chunk: int = 0) -> np.random.Generator:
        """One independent random stream per (stream, chunk, shard): the basis of determinism.

        The first shard's streams are keyed as before shards existed, so an org of one shard
        is unchanged.
        """
        return np.random.default_rng(shard_stream([self.seed, stream, chunk], self.shard))

    # Users ------------------------------------------------------------------------------------

    def users(self) -> None:
        users = [
            (first, last, f"Account Executive, {region}", "Sales")
            for first, last, region in SALES_REPS
        ]
        users.append(("Marketing", "Automation", "Marketing Automation", "Marketing"))
        users.append(("Integration", "User", "Integration User", "IT"))
        self.user_ids = make_ids("005", 1, len(users))
        self.rep_ids = np.array(self.user_ids[: len(SALES_REPS)], dtype=object)
        self.marketing_user = self.user_ids[len(SALES_REPS)]
        self.integration_user = self.user_ids[-1]
        created = self.start - 400 * DAY
        usernames = [f"{first}.{last}@{USERNAME_DOMAIN}".lower() for first, last, _, _ in users]
        usernames[-1] = INTEGRATION_USERNAME
        usernames[-2] = f"marketing.automation@{USERNAME_DOMAIN}"
        _insert(
            self.conn,
            "User",
            {
                "Id": self.user_ids,
                "Username": usernames,
                "FirstName": [u[0] for u in users],
                "LastName": [u[1] for u in users],
                "Name": [f"{u[0]} {u[1]}" for u in users],
                "Email": usernames,
                "Title": [u[2] for u in users],
                "Department": [u[3] for u in users],
                "IsActive": [1] * len(users),
                "CreatedDate": [created] * len(users),
                "LastModifiedDate": [created] * len(users),
                "SystemModstamp": [created] * len(users),
            },
        )

    # Companies and leads ----------------------------------------------------------------------

    def companies(self) -> _Companies:
        rng = self.rng(1)
        count = max(4, round(self.n / 2.5))
        industry = rng.choice(len(INDUSTRIES), count, p=INDUSTRY_WEIGHTS)
        band = rng.choice(len(EMPLOYEE_BANDS), count, p=BAND_WEIGHTS)
        lower = np.array((*EMPLOYEE_BAND_LOWER, 100_001), dtype=float)
        low, high = lower[band], lower[band + 1]
        employees = np.floor(np.exp(rng.uniform(np.log(low), np.log(high)))).astype(np.int64)
        employees = np.clip(employees, low.astype(np.int64), high.astype(np.int64) - 1)
        revenue = np.round(employees * rng.lognormal(np.log(150_000), 0.5, count), -3)
        weights = np.array(list(COUNTRY_WEIGHTS.values()))
        country = rng.choice(len(self.countries), count, p=weights / weights.sum())
        # Unique names: a shuffled walk through prefix x root x suffix, numbered once exhausted.
        slots = len(COMPANY_PREFIXES) * len(COMPANY_ROOTS) * len(COMPANY_SUFFIXES)
        order = rng.permutation(max(count, slots))[:count] if count <= slots else np.arange(count)
        # later shards walk on from where the earlier ones' numbers end (names stay unique)
        order = order + self.first_company
        self.first_company += max(count, slots)
        return _Companies(order, industry, employees, revenue, country)

    def leads(self, companies: _Companies) -> _Leads:
        rng = self.rng(2)
        n = self.n
        span = HISTORY_DAYS * DAY
        # Volume rises linearly to twice the starting rate: density 1 + t/T, inverted CDF.
        u = rng.random(n)
        offset = span * (np.sqrt(1.0 + 3.0 * u) - 1.0)
        created = self.start + offset.astype(np.int64)
        source = rng.choice(len(LEAD_SOURCES), n, p=LEAD_SOURCE_WEIGHTS)
        # List imports (trade shows, syndication) land in batches: many leads share a second.
        imported = (source == LEAD_SOURCES.index("Trade Show")) | (
            source == LEAD_SOURCES.index("Content Syndication")
        )
        created = np.where(imported, np.maximum(created // 900 * 900, self.start), created)
        order = np.argsort(created, kind="stable")
        created = created[order]
        source = source[order]
        company = rng.integers(0, len(companies), n)
        seniority = rng.choice(len(SENIORITIES), n, p=SENIORITY_WEIGHTS)
        function = rng.choice(len(FUNCTIONS), n, p=FUNCTION_WEIGHTS)
        head_of = rng.random(n) < 0.3
        # A title is one of a few hundred strings: an object array sharing them, not one each.
        title = _title_table()[seniority, function, head_of.astype(np.int64)]
        first_name = rng.integers(0, len(FIRST_NAMES), n)
        last_name = rng.integers(0, len(LAST_NAMES), n)
        first = np.array(FIRST_NAMES, dtype=object)[first_name]
        last = np.array(LAST_NAMES, dtype=object)[last_name]
        region = self.country_region[companies.country[company]]
        owner = self.rep_ids[region * 3 + rng.integers(0, 3, n)]
        # every domain as a str only while the addresses are counted
        domains = companies.domains(slice(None))
        email_number = _email_numbers(first_name, last_name, company, domains)
        del domains

        # Anchors: the first campaign response day.
        responds = rng.random(n) < P_RESPOND
        mix = rng.choice(3, n, p=RESPONSE_GAP_MIX)
        gap = np.where(
            mix == 0,
            0.0,
            np.where(mix == 1, 1 + rng.exponential(25.0, n), 1 + rng.exponential(120.0, n)),
        ).astype(np.int64)
        anchor_at = (created // DAY + gap) * DAY
        anchored = responds & (anchor_at + DAY <= self.as_of)
        campaign_zero = (self.start // DAY - CAMPAIGN_DAYS) * DAY
        latest = (anchor_at - campaign_zero) // (CAMPAIGN_EVERY_DAYS * DAY)
        step_back = (rng.random(n) < 0.4) & (latest >= 1)
        anchor_campaign = latest - step_back
        campaign_start = campaign_zero + anchor_campaign * CAMPAIGN_EVERY_DAYS * DAY
        member_created = np.maximum.reduce(
            [
                anchor_at - (rng.uniform(1, 6, n) * DAY).astype(np.int64),
                campaign_start + 8 * HOUR,
                created + 60,
            ]
        )
        day_end = anchor_at + DAY - 1
        member_created = np.minimum(member_created, day_end)
        response_at = anchor_at + (rng.uniform(7, 19, n) * HOUR).astype(np.int64)
        response_at = np.minimum(np.maximum(response_at, member_created + 60), day_end)
        latent = rng.standard_normal(n)
        # A few unanchored leads convert without a campaign response (sales-sourced deals).
        unanchored_conversion = np.where(
            ~responds & (rng.random(n) < P_UNANCHORED_CONVERSION),
            created + (rng.uniform(10, 200, n) * DAY).astype(np.int64),
            np.iinfo(np.int64).max,
        )
        deleted = ~responds & (unanchored_conversion > self.as_of) & (rng.random(n) < P_DELETED)
        deleted_at = created + (rng.random(n) * (self.as_of - created)).astype(np.int64)
        return _Leads(
            ids=make_id_array("00Q", self.first_lead + 1, n),
            created=created,
            company=company,
            first=first,
            last=last,
            email_number=email_number,
            companies=companies,
            title=title,
            seniority=seniority,
            source=source,
            owner=owner,
            responds=responds,
            anchor_at=anchor_at,
            anchored=anchored,
            anchor_campaign=anchor_campaign,
            member_created=member_created,
            response_at=response_at,
            latent=latent,
            deleted=deleted,
            deleted_at=deleted_at,
            unanchored_conversion=unanchored_conversion,
        )

    def campaigns(self) -> _Campaigns:
        rng = self.rng(3)
        campaign_zero = (self.start // DAY - CAMPAIGN_DAYS) * DAY
        count = int((self.as_of - campaign_zero) // (CAMPAIGN_EVERY_DAYS * DAY)) + 1
        start = campaign_zero + np.arange(count, dtype=np.int64) * CAMPAIGN_EVERY_DAYS * DAY
        kind = rng.choice(len(CAMPAIGN_TYPES), count)
        topic = rng.integers(0, len(CAMPAIGN_TOPICS), count)
        end = start + (CAMPAIGN_DAYS - 1) * DAY
        status = np.where(end < self.as_of, "Completed", "In Progress")
        ids = make_ids("701", 1, count)
        months = _date_strings(start)
        created = start - 10 * DAY
        modified = np.where(end < self.as_of, end + 8 * HOUR, created)
        _insert(
            self.conn,
            "Campaign",
            {
                "Id": ids,
                "Name": [
                    f"{month[:7]} {CAMPAIGN_TYPES[k]}: {CAMPAIGN_TOPICS[t]}"
                    for month, k, t in zip(months, kind.tolist(), topic.tolist(), strict=True)
                ],
                "Type": _pick(CAMPAIGN_TYPES, kind),
                "Status": status.tolist(),
                "IsActive": (status == "In Progress").astype(int).tolist(),
                "StartDate": months,
                "EndDate": _date_strings(end),
                "OwnerId": [self.marketing_user] * count,
                "IsDeleted": [0] * count,
                "CreatedDate": created.tolist(),
                "LastModifiedDate": modified.tolist(),
                "SystemModstamp": modified.tolist(),
            },
        )
        return _Campaigns(ids, start, kind)

    # Activities, outcomes -----------------------------------------------------------------------

    def activities(self, leads: _Leads, companies: _Companies) -> dict[str, np.ndarray]:
        """Generate tasks and events chunk by chunk; return per-lead outcomes and features."""
        n = self.n
        outcome = {
            "p_true": np.full(n, np.nan),
            "label": np.zeros(n, dtype=bool),
            "conversion": leads.unanchored_conversion.copy(),
            "first_touch": np.full(n, np.iinfo(np.int64).max, dtype=np.int64),
            "contact_seq": np.full(n, -1, dtype=np.int64),
            **{name: np.zeros(n, dtype=np.int64) for name in ENGAGEMENT_WINDOWS},
            **{name: np.zeros(n, dtype=float) for name in CDP_WINDOWS},
        }
        people = None
        if self.segment is not None:
            # The CDP side reads every lead's id and email as str (only when it is generated).
            people = People(
                ids=leads.id_strings(slice(None)).tolist(),
                email=leads.emails(slice(None)),
                first=leads.first,
                last=leads.last,
                company=companies.names(leads.company),
                created=leads.created,
                anchor_at=leads.anchor_at,
                responds=leads.responds,
                number_from=self.first_lead,
            )
        task_seq = self.task_seq
        event_seq = self.event_seq
        contact_seq = self.contacts
        chunks = math.ceil(n / TASK_CHUNK_LEADS)
        for chunk in range(chunks):
            low, high = chunk * TASK_CHUNK_LEADS, min(n, (chunk + 1) * TASK_CHUNK_LEADS)
            rng = self.rng(10, chunk)
            marketing = self._marketing_events(rng, leads, low, high)
            counts = self._window_counts(leads, marketing, low, high)
            for name, values in counts.items():
                outcome[name][low:high] = values
            frame = self._static_frame(leads, companies, low, high)
            for name, values in counts.items():
                frame[name] = values
            frame["age_days"] = (leads.anchor_at[low:high] - leads.created[low:high]) / DAY
            frame["regime"] = (leads.anchor_at[low:high] > self.as_of - REGIME_DAYS * DAY).astype(
                int
            )
            if self.segment is not None and people is not None:
                # The CDP side of the same people; its usage counts enter the hidden model.
                segment_chunk = self.first_chunk + chunk
                for name, values in self.segment.chunk(segment_chunk, people, low, high).items():
                    outcome[name][low:high] = values
                    frame[name] = values
            p_true = sigmoid(hidden_logit(frame, self.org))
            anchored = leads.anchored[low:high]
            outcome["p_true"][low:high] = np.where(anchored, p_true, np.nan)
            conversion, label = self._outcomes(rng, leads, p_true, low, high)
            outcome["label"][low:high] = label
            outcome["conversion"][low:high] = np.where(
                anchored, conversion, leads.unanchored_conversion[low:high]
            )
            converted = outcome["conversion"][low:high] <= self.as_of
            # Contacts/opportunities are numbered in conversion order within the chunk.
            converted_index = np.flatnonzero(converted)
            converted_index = converted_index[
                np.argsort(outcome["conversion"][low:high][converted_index], kind="stable")
            ]
            outcome["contact_seq"][low + converted_index] = contact_seq + np.arange(
                len(converted_index)
            )
            contact_seq += len(converted_index)
            sales = self._sales_touches(rng, leads, outcome, low, high, label)
            task_seq, event_seq = self._write_activities(
                rng, leads, outcome, marketing, sales, low, high, task_seq, event_seq
            )
            self.progress("activities", self.first_lead + high, self.total)
        self.task_seq, self.event_seq = task_seq, event_seq
        return outcome

    def _static_frame(
        self, leads: _Leads, companies: _Companies, low: int, high: int
    ) -> pd.DataFrame:
        """The hidden model's firmographic inputs of leads [low, high) (one chunk at a time)."""
        company = leads.company[low:high]
        return pd.DataFrame(
            {
                "Industry": np.asarray(INDUSTRIES, dtype=object)[companies.industry[company]],
                "Seniority__c": np.asarray(SENIORITIES, dtype=object)[leads.seniority[low:high]],
                "NumberOfEmployees": companies.employees[company],
                "LeadSource": np.asarray(LEAD_SOURCES, dtype=object)[leads.source[low:high]],
                "Country": np.asarray(self.countries, dtype=object)[companies.country[company]],
            }
        )

    def _marketing_events(
        self, rng: np.random.Generator, leads: _Leads, low: int, high: int
    ) -> dict[str, np.ndarray]:
        """Marketing-engagement activity times for leads [low, high): baseline, ramp, burst."""
        created = leads.created[low:high]
        anchor_at = leads.anchor_at[low:high]
        size = high - low
        intensity = np.exp(LATENT_SIGMA * leads.latent[low:high] - LATENT_SIGMA**2 / 2)
        life_days = (self.as_of - created) / DAY
        base_n = rng.poisson(BASE_RATE_PER_DAY * intensity * life_days)
        base_lead = np.repeat(np.arange(size), base_n)
        base_t = created[base_lead] + (
            rng.random(len(base_lead)) * (self.as_of - created[base_lead])
        ).astype(np.int64)
        # Interest ramps up in the weeks before the first response (also for responses that
        # will only happen after as_of).
        lead_days = np.maximum(anchor_at - created, 0) / DAY
        ramp_mean = np.where(
            leads.responds[low:high],
            RAMP_EVENTS * intensity * -np.expm1(-lead_days / RAMP_TAU_DAYS),
            0.0,
        )
        ramp_n = rng.poisson(ramp_mean)
        ramp_lead = np.repeat(np.arange(size), ramp_n)
        before = _trunc_exponential(
            rng, np.full(len(ramp_lead), RAMP_TAU_DAYS), lead_days[ramp_lead]
        )
        ramp_t = anchor_at[ramp_lead] - (before * DAY).astype(np.int64)
        post_n = rng.poisson(np.where(leads.anchored[low:high], POST_EVENTS * intensity, 0.0))
        post_lead = np.repeat(np.arange(size), post_n)
        post_t = anchor_at[post_lead] + (
            (0.3 + rng.exponential(POST_TAU_DAYS, len(post_lead))) * DAY
        ).astype(np.int64)
        lead = np.concatenate([base_lead, ramp_lead, post_lead])
        moment = np.concatenate([base_t, ramp_t, post_t])
        moment = np.maximum(moment, created[lead])
        # Activities arrive with the next marketing-automation sync: many share a second.
        stored = -(-moment // SYNC_SECONDS) * SYNC_SECONDS
        kind = rng.choice(len(MARKETING_TASK_TYPES), len(lead), p=MARKETING_TYPE_P)
        page = rng.integers(0, len(WEB_PAGES), len(lead))
        keep = stored <= self.as_of
        return {"lead": lead[keep], "created": stored[keep], "kind": kind[keep], "page": page[keep]}

    def _window_counts(
        self, leads: _Leads, marketing: dict[str, np.ndarray], low: int, high: int
    ) -> dict[str, np.ndarray]:
        """Count marketing activities per lead in each hidden-model window before the anchor."""
        lead = marketing["lead"]
        before = leads.anchor_at[low:high][lead] - marketing["created"]
        counts = {}
        for name, (task_type, days) in ENGAGEMENT_WINDOWS.items():
            mask = (
                (marketing["kind"] == MARKETING_TASK_TYPES.index(task_type))
                & (before > 0)
                & (before <= days * DAY)
            )
            counts[name] = np.bincount(lead[mask], minlength=high - low).astype(np.int64)
        return counts

    def _outcomes(
        self, rng: np.random.Generator, leads: _Leads, p_true: np.ndarray, low: int, high: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw each anchored lead's conversion time (int64 max = never) and 30-day label."""
        size = high - low
        anchored = leads.anchored[low:high]
        anchor_at = leads.anchor_at[low:high]
        label = anchored & (rng.random(size) < p_true)
        late = anchored & ~label & (rng.random(size) < P_LATE_CONVERSION)
        offset_days = np.where(
            label,
            rng.integers(0, LABEL_WINDOW_DAYS, size),
            rng.integers(LABEL_WINDOW_DAYS, 151, size),
        )
        day_start = anchor_at + offset_days * DAY
        moment = day_start + (rng.uniform(9, 18, size) * HOUR).astype(np.int64)
        moment = np.minimum(
            np.maximum(moment, leads.response_at[low:high] + HOUR), day_start + DAY - 1
        )
        conversion = np.where(label | late, moment, np.iinfo(np.int64).max)
        return conversion, label

    def _sales_touches(
        self,
        rng: np.random.Generator,
        leads: _Leads,
        outcome: dict[str, np.ndarray],
        low: int,
        high: int,
        label: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Calls, emails and meetings by the owner: mostly right after the anchor."""
        size = high - low
        anchored = leads.anchored[low:high]
        response = leads.response_at[low:high]
        conversion = outcome["conversion"][low:high]
        will_convert = conversion < np.iinfo(np.int64).max
        late = will_convert & ~label & anchored
        fast = rng.random(size) < P_FAST_FIRST_TOUCH
        first = np.where(
            fast,
            response + (rng.uniform(0.5, 23.5, size) * HOUR).astype(np.int64),
            response + ((1 + rng.exponential(6.0, size)) * DAY).astype(np.int64),
        )
        # Reps call new leads at their own hours and in their own order (reps.py); the draws
        # above stay, so that every later random draw is unchanged.
        first = first_touch_times(
            self.rng(20, low // TASK_CHUNK_LEADS),
            owner=leads.owner[low:high],
            response=response,
            visible=outcome["p_true"][low:high],
            rep_ids=self.rep_ids,
            conn=self.conn,
            lead_ids=leads.id_strings(slice(low, high)),
            first_day=self.start // DAY,
        )
        # Converters are contacted before they convert.
        first = np.where(
            will_convert, np.maximum(np.minimum(first, conversion - 600), response + 300), first
        )
        extra_n = rng.poisson(np.where(anchored, 1.2 + 2.5 * label + 1.5 * late, 0.0))
        extra_lead = np.repeat(np.arange(size), extra_n)
        extra_t = first[extra_lead] + (rng.random(len(extra_lead)) * 30 * DAY).astype(np.int64)
        # Touches of leads that never responded: cold outreach mostly.
        cold = leads.source[low:high] == LEAD_SOURCES.index("Cold Outreach")
        created = leads.created[low:high]
        other_n = rng.poisson(np.where(anchored, 0.8 * cold, np.where(cold, 1.0, 0.2)))
        other_lead = np.repeat(np.arange(size), other_n)
        other_end = np.where(anchored, leads.anchor_at[low:high], self.as_of)[other_lead]
        other_end = np.maximum(other_end, created[other_lead] + 1)
        other_t = created[other_lead] + (
            rng.random(len(other_lead)) * (other_end - created[other_lead])
        ).astype(np.int64)
        first_lead = np.flatnonzero(anchored)
        lead = np.concatenate([first_lead, extra_lead, other_lead])
        moment = np.concatenate([first[first_lead], extra_t, other_t])
        kind = np.concatenate(
            [
                rng.integers(0, 2, len(first_lead)),  # first touch: Call or Email
                np.where(
                    rng.random(len(extra_lead)) < np.where(label[extra_lead], 0.35, 0.2),
                    2,
                    rng.integers(0, 2, len(extra_lead)),
                ),
                rng.integers(0, 2, len(other_lead)),
            ]
        )
        # Deleted leads took their activities to the recycle bin: nothing after the deletion.
        keep = (moment <= self.as_of) & (
            ~leads.deleted[low:high][lead] | (moment <= leads.deleted_at[low:high][lead])
        )
        lead, moment, kind = lead[keep], moment[keep], kind[keep]
        first_touch = outcome["first_touch"][low:high]
        np.minimum.at(first_touch, lead, moment)
        return {"lead": lead, "created": moment, "kind": kind}

    def _write_activities(
        self,
        rng: np.random.Generator,
        leads: _Leads,
        outcome: dict[str, np.ndarray],
        marketing: dict[str, np.ndarray],
        sales: dict[str, np.ndarray],
        low: int,
        high: int,
        task_seq: int,
        event_seq: int,
    ) -> tuple[int, int]:
        """Write one chunk's Task and Event rows (re-parented to contacts when converted)."""
        deleted = leads.deleted[low:high]
        m_keep = ~deleted[marketing["lead"]] | (
            marketing["created"] <= leads.deleted_at[low:high][marketing["lead"]]
        )
        lead = np.concatenate([marketing["lead"][m_keep], sales["lead"]])
        created = np.concatenate([marketing["created"][m_keep], sales["created"]])
        # Type codes index TASK_TYPES = sales types then marketing types.
        kind = np.concatenate([marketing["kind"][m_keep] + len(SALES_TASK_TYPES), sales["kind"]])
        page = np.concatenate([marketing["page"][m_keep], np.zeros(len(sales["lead"]), int)])
        order = np.argsort(created, kind="stable")
        lead, created, kind, page = lead[order], created[order], kind[order], page[order]
        count = len(lead)
        global_lead = lead + low
        conversion = outcome["conversion"][global_lead]
        converted = conversion <= self.as_of
        contact_ids = self.contact_ids_for(outcome["contact_seq"][global_lead], converted)
        opportunity_ids = self.opportunity_ids_for(outcome["contact_seq"][global_lead], converted)
        lead_ids = leads.id_strings(global_lead)
        who = np.where(converted, contact_ids, lead_ids)
        modified = np.where(converted, np.maximum(created, conversion), created)
        is_deleted = leads.deleted[global_lead]
        modified = np.where(
            is_deleted, np.maximum(modified, leads.deleted_at[global_lead]), modified
        )
        marketing_kind = kind >= len(SALES_TASK_TYPES)
        owner = np.where(marketing_kind, self.marketing_user, leads.owner[global_lead])
        subjects = np.array(
            [
                "Call",
                "Email: Follow-up",
                "Meeting: Discovery",
                "",
                "Email Click: Newsletter",
                "Webinar: Attended",
                "Content Download: Whitepaper",
            ],
            dtype=object,
        )
        subject = subjects[kind]
        web = kind == len(SALES_TASK_TYPES)
        subject[web] = np.char.add("Web Visit: ", np.asarray(WEB_PAGES)[page[web]]).astype(object)
        subtype = np.array(["Call", "Email", "Task", "Task", "Task", "Task", "Task"], dtype=object)[
            kind
        ]
        task_types = SALES_TASK_TYPES + MARKETING_TASK_TYPES
        _insert(
            self.conn,
            "Task",
            {
                "Id": _id_range("00T", task_seq),
                "WhoId": who,
                "WhatId": _nullable(opportunity_ids, converted),
                "Subject": subject,
                "Type": _pick(task_types, kind),
                "Status": ["Completed"] * count,
                "Priority": ["Normal"] * count,
                "IsClosed": [1] * count,
                "ActivityDate": _date_strings(created),
                "TaskSubtype": subtype,
                "OwnerId": owner,
                "IsDeleted": is_deleted.astype(int),
                "CreatedDate": created,
                "LastModifiedDate": modified,
                "SystemModstamp": modified,
            },
        )
        # Meetings also put an Event on the calendar a few days later.
        meeting = kind == SALES_TASK_TYPES.index("Meeting")
        meetings = int(meeting.sum())
        if meetings:
            start = (created[meeting] // DAY + 1 + rng.integers(0, 5, meetings)) * DAY + (
                10 + rng.integers(0, 7, meetings)
            ) * HOUR
            duration = rng.choice([30, 60], meetings)
            _insert(
                self.conn,
                "Event",
                {
                    "Id": _id_range("00U", event_seq),
                    "WhoId": who[meeting],
                    "WhatId": _nullable(opportunity_ids[meeting], converted[meeting]),
                    "Subject": ["Discovery meeting"] * meetings,
                    "Type": ["Meeting"] * meetings,
                    "ActivityDate": _date_strings(start),
                    "ActivityDateTime": start,
                    "StartDateTime": start,
                    "EndDateTime": (start + duration * 60),
                    "DurationInMinutes": duration,
                    "OwnerId": owner[meeting],
                    "IsDeleted": is_deleted[meeting].astype(int),
                    "CreatedDate": created[meeting],
                    "LastModifiedDate": modified[meeting],
                    "SystemModstamp": modified[meeting],
                },
            )
        return task_seq + count, event_seq + meetings

    @staticmethod
    def contact_ids_for(sequence: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Contact ids for contact sequence numbers (None where ``mask`` is False)."""
        return _ids_for("003", sequence, mask)

    @staticmethod
    def opportunity_ids_for(sequence: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Opportunity ids: one opportunity per conversion, numbered like the contacts."""
        return _ids_for("006", sequence, mask)

    # Records created by conversion, memberships, leads ------------------------------------------

    def conversions(
        self, leads: _Leads, companies: _Companies, outcome: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Write the accounts, contacts and opportunities created by lead conversions."""
        rng = self.rng(4)
        conversion = outcome["conversion"]
        converted = np.flatnonzero(conversion <= self.as_of)
        converted = converted[np.argsort(outcome["contact_seq"][converted], kind="stable")]
        count = len(converted)
        at = conversion[converted]
        company = leads.company[converted]
        # One account per company, created by its first conversion.
        account_companies = np.unique(company)
        company_first = pd.Series(at).groupby(company).min()
        account_order = account_companies[
            np.argsort(company_first.loc[account_companies].to_numpy(), kind="stable")
        ]
        account_seq = pd.Series(np.arange(len(account_order)), index=account_order)
        account_ids = np.asarray(
            make_ids("001", self.accounts + 1, len(account_order)), dtype=object
        )
        self.accounts += len(account_order)
        lead_account = account_ids[account_seq.loc[company].to_numpy()]
        # numbered on from the earlier shards' contacts, as the activities numbered them
        contact_ids = np.asarray(make_ids("003", self.contacts + 1, count), dtype=object)
        opportunity_ids = np.asarray(make_ids("006", self.contacts + 1, count), dtype=object)
        self.contacts += count
        employees = companies.employees[company]
        amount = np.round(1200 * employees**0.55 * rng.lognormal(0, 0.35, count), -2)
        if self.org != "classic":
            # the same draws (continuity), scaled by who buys: industry and seniority
            industry = np.asarray(INDUSTRIES, dtype=object)[companies.industry[company]]
            seniority = np.asarray(SENIORITIES, dtype=object)[leads.seniority[converted]]
            factor = (
                pd.Series(industry).map(AMOUNT_INDUSTRY).fillna(1.0).to_numpy()
                * pd.Series(seniority).map(AMOUNT_SENIORITY).fillna(1.0).to_numpy()
            )
            amount = np.round(amount * factor, -2)
        close_days = rng.uniform(20, 120, count)
        age_days = (self.as_of - at) / DAY
        closed = age_days >= close_days
        won = closed & (rng.random(count) < 0.45)
        progress = np.clip(age_days / close_days, 0, 0.999)
        open_stage = np.searchsorted([0.25, 0.5, 0.7, 0.9], progress, side="right")
        stage = np.where(closed, np.where(won, 5, 6), open_stage)
        close_at = at + (close_days * DAY).astype(np.int64)
        opp_modified = np.where(closed, close_at, at + (0.8 * age_days * DAY).astype(np.int64))
        opp_modified = np.clip(opp_modified, at, self.as_of)
        country = np.asarray(self.countries, dtype=object)[companies.country[company]]
        owner = leads.owner[converted]
        source = np.asarray(LEAD_SOURCES, dtype=object)[leads.source[converted]]
        _insert(
            self.conn,
            "Opportunity",
            {
                "Id": opportunity_ids,
                "AccountId": lead_account,
                "Name": lambda part: [
                    f"{name} - New Business" for name in companies.names(company[part]).tolist()
                ],
                "StageName": _pick(OPPORTUNITY_STAGES, stage),
                "IsClosed": closed.astype(int),
                "IsWon": won.astype(int),
                "Amount": amount,
                "CloseDate": _date_strings(close_at),
                "LeadSource": source,
                "OwnerId": owner,
                "IsDeleted": [0] * count,
                "CreatedDate": at,
                "LastModifiedDate": opp_modified,
                "SystemModstamp": opp_modified,
            },
        )
        _insert(
            self.conn,
            "Contact",
            {
                "Id": contact_ids,
                "AccountId": lead_account,
                "FirstName": leads.first[converted],
                "LastName": leads.last[converted],
                "Name": _names(leads.first[converted], leads.last[converted]),
                "Email": lambda part: leads.emails(converted[part]),
                "Title": leads.title[converted],
                "LeadSource": source,
                "MailingCountry": country,
                "OwnerId": owner,
                "IsDeleted": [0] * count,
                "CreatedDate": at,
                "LastModifiedDate": at,
                "SystemModstamp": at,
            },
        )
        won_company = pd.Series(won).groupby(company).any()
        first_owner = pd.Series(owner).groupby(company).first()
        accounts = account_order
        created = company_first.loc[accounts].to_numpy()
        _insert(
            self.conn,
            "Account",
            {
                "Id": account_ids,
                "Name": _lazy(companies.names, accounts),
                "Type": np.where(
                    won_company.loc[accounts].to_numpy(), "Customer - Direct", "Prospect"
                ),
                "Industry": _pick(INDUSTRIES, companies.industry[accounts]),
                "NumberOfEmployees": companies.employees[accounts],
                "AnnualRevenue": companies.revenue[accounts],
                "BillingCountry": np.asarray(self.countries, dtype=object)[
                    companies.country[accounts]
                ],
                "OwnerId": first_owner.loc[accounts].to_numpy(),
                "IsDeleted": [0] * len(accounts),
                "CreatedDate": created,
                "LastModifiedDate": created,
                "SystemModstamp": created,
            },
        )
        per_lead = np.full(self.n, None, dtype=object)
        account_per_lead = per_lead.copy()
        contact_per_lead = per_lead.copy()
        opportunity_per_lead = per_lead.copy()
        account_per_lead[converted] = lead_account
        contact_per_lead[converted] = contact_ids
        opportunity_per_lead[converted] = opportunity_ids
        return {
            "account": account_per_lead,
            "contact": contact_per_lead,
            "opportunity": opportunity_per_lead,
        }

    def members(
        self,
        leads: _Leads,
        campaigns: _Campaigns,
        outcome: dict[str, np.ndarray],
        converted_ids: dict[str, np.ndarray],
    ) -> None:
        """Write campaign memberships: the anchor response, later responses, plain sends."""
        rng = self.rng(5)
        n = self.n
        count = len(campaigns.ids)
        anchored = np.flatnonzero(leads.anchored)
        # Later responses to other campaigns by some responders.
        again = anchored[rng.random(len(anchored)) < 0.25]
        second_day = (
            leads.anchor_at[again] // DAY + 1 + rng.exponential(60.0, len(again)).astype(np.int64)
        ) * DAY
        campaign_zero = int(campaigns.start[0])
        second_campaign = (second_day - campaign_zero) // (CAMPAIGN_EVERY_DAYS * DAY)
        valid = (second_day + DAY <= self.as_of) & (second_campaign != leads.anchor_campaign[again])
        again, second_day, second_campaign = again[valid], second_day[valid], second_campaign[valid]
        second_created = np.maximum(
            second_day - (rng.uniform(1, 6, len(again)) * DAY).astype(np.int64),
            campaigns.start[second_campaign] + 8 * HOUR,
        )
        second_response = np.maximum(
            second_day + (rng.uniform(7, 19, len(again)) * HOUR).astype(np.int64),
            second_created + 60,
        )
        # Plain sends: email blasts to leads that exist when the campaign starts.
        sends = rng.poisson(1.3, n)
        sent_lead = np.repeat(np.arange(n), sends)
        first_campaign = np.searchsorted(campaigns.start, leads.created[sent_lead], side="left")
        room = count - first_campaign
        has_room = room > 0
        sent_lead, first_campaign, room = (
            sent_lead[has_room],
            first_campaign[has_room],
            room[has_room],
        )
        sent_campaign = first_campaign + (rng.random(len(sent_lead)) * room).astype(np.int64)
        sent_created = np.maximum(
            campaigns.start[sent_campaign]
            + (rng.random(len(sent_lead)) * 3 * DAY).astype(np.int64),
            leads.created[sent_lead] + 60,
        )
        # priority: 0 anchor response, 1 later response, 2 send (dedupe keeps the lowest).
        # Columns live in one dict and are replaced one at a time (not as a tuple of new
        # arrays), so that an old column is freed before the next new one is made.
        member = {
            "lead": np.concatenate([anchored, again, sent_lead]),
            "campaign": np.concatenate(
                [leads.anchor_campaign[anchored], second_campaign, sent_campaign]
            ),
            "created": np.concatenate(
                [leads.member_created[anchored], second_created, sent_created]
            ),
            "responded_on": np.concatenate(
                [leads.anchor_at[anchored], second_day, np.zeros(len(sent_lead), np.int64)]
            ),
            "modified": np.concatenate(
                [leads.response_at[anchored], second_response, sent_created]
            ),
            "priority": np.concatenate(
                [
                    np.zeros(len(anchored), np.int8),
                    np.ones(len(again), np.int8),
                    np.full(len(sent_lead), 2, np.int8),
                ]
            ),
        }
        del again, second_day, second_campaign, second_created, second_response
        del sent_lead, first_campaign, room, has_room, sent_campaign, sent_created, sends
        _take(member, np.lexsort((member["priority"], member["campaign"], member["lead"])))
        lead, campaign, created = member["lead"], member["campaign"], member["created"]
        keep = np.ones(len(lead), dtype=bool)
        keep[1:] = (lead[1:] != lead[:-1]) | (campaign[1:] != campaign[:-1])
        conversion = outcome["conversion"][lead]
        # A converted lead cannot join campaigns; deleted leads took their memberships along.
        keep &= (created <= self.as_of) & (created <= conversion)
        keep &= ~leads.deleted[lead] | (created <= leads.deleted_at[lead])
        del lead, campaign, created, conversion
        _take(member, keep)
        del keep
        lead = member["lead"]
        conversion = outcome["conversion"][lead]
        converted = conversion <= self.as_of
        modified = np.where(
            converted, np.maximum(member["modified"], conversion), member["modified"]
        )
        del conversion
        member["deleted"] = deleted = leads.deleted[lead]
        member["modified"] = np.where(
            deleted, np.maximum(modified, leads.deleted_at[lead]), modified
        )
        del lead, converted, deleted, modified
        _take(member, np.argsort(member["created"], kind="stable"))
        responded = member.pop("priority") < 2
        campaign_ids = np.asarray(campaigns.ids, dtype=object)
        contact_ids = converted_ids["contact"]
        _insert(
            self.conn,
            "CampaignMember",
            {
                "Id": _id_range("00v", self.members_written + 1),
                "CampaignId": _lazy(lambda c: campaign_ids[c], member["campaign"]),
                "LeadId": _id_column(leads, member["lead"]),
                "ContactId": _lazy(lambda index: contact_ids[index], member["lead"]),
                "Status": _lazy(lambda r: np.where(r, "Responded", "Sent"), responded),
                "HasResponded": _lazy(lambda r: r.astype(int), responded),
                "FirstRespondedDate": _lazy(
                    lambda day, r: _nullable(_date_strings(day), r),
                    member["responded_on"],
                    responded,
                ),
                "IsDeleted": _lazy(lambda d: d.astype(int), member["deleted"]),
                "CreatedDate": member["created"],
                "LastModifiedDate": member["modified"],
                "SystemModstamp": member["modified"],
            },
        )
        self.members_written += len(member["lead"])

    def write_leads(
        self,
        leads: _Leads,
        companies: _Companies,
        outcome: dict[str, np.ndarray],
        converted_ids: dict[str, np.ndarray],
    ) -> None:
        """Write the Lead rows with their final state as of ``as_of``."""
        rng = self.rng(6)
        n = self.n
        conversion = outcome["conversion"]
        converted = conversion <= self.as_of
        will_convert = conversion < np.iinfo(np.int64).max
        first_touch = outcome["first_touch"]
        touched = first_touch <= self.as_of
        # Sales rates the lead after the first contact; converters look better (a leaky field).
        rating_draw = rng.random(n)
        hot_cut = np.where(will_convert, 0.55, 0.08)
        warm_cut = hot_cut + np.where(will_convert, 0.35, 0.32)
        # codes into RATINGS (one shared str each, not a str per lead); untouched leads: None
        rating = np.where(rating_draw < hot_cut, 0, np.where(rating_draw < warm_cut, 1, 2))
        rating[~touched] = 3
        del rating_draw, hot_cut, warm_cut
        closed_at = first_touch + 60 * DAY
        closes = touched & ~will_convert & (closed_at <= self.as_of) & (rng.random(n) < 0.75)
        status = np.full(n, "Open - Not Contacted", dtype=object)
        status[touched] = "Working - Contacted"
        status[closes] = "Closed - Not Converted"
        status[converted] = "Closed - Converted"
        modified = leads.created.copy()
        modified = np.where(touched, np.maximum(modified, first_touch), modified)
        modified = np.where(closes, np.maximum(modified, closed_at), modified)
        modified = np.where(converted, np.maximum(modified, conversion), modified)
        modified = np.where(leads.deleted, np.maximum(modified, leads.deleted_at), modified)
        modified = np.minimum(modified, self.as_of)
        company = leads.company
        # Columns that are lookups are made per batch (_lazy): n-long object arrays of them
        # were this step's memory.
        ratings = np.array(("Hot", "Warm", "Cold", None), dtype=object)
        _insert(
            self.conn,
            "Lead",
            {
                "Id": lambda part: leads.id_strings(part).tolist(),
                "FirstName": leads.first,
                "LastName": leads.last,
                "Name": _names(leads.first, leads.last),
                "Email": leads.emails,
                "Company": _lazy(companies.names, company),
                "Title": leads.title,
                "Seniority__c": _lazy(lambda i: _pick(SENIORITIES, i), leads.seniority),
                "OwnerId": leads.owner,
                "Industry": _lazy(lambda c: _pick(INDUSTRIES, companies.industry[c]), company),
                "LeadSource": _lazy(lambda i: _pick(LEAD_SOURCES, i), leads.source),
                "Status": status,
                "Rating": _lazy(lambda r: ratings[r], rating),
                "Country": _lazy(lambda c: _pick(self.countries, companies.country[c]), company),
                "NumberOfEmployees": _lazy(lambda c: companies.employees[c], company),
                "AnnualRevenue": _lazy(lambda c: companies.revenue[c], company),
                "IsConverted": _lazy(lambda c: c.astype(int), converted),
                "ConvertedDate": _lazy(
                    lambda at, c: _nullable(_date_strings(np.where(c, at, 0)), c),
                    conversion,
                    converted,
                ),
                "ConvertedAccountId": converted_ids["account"],
                "ConvertedContactId": converted_ids["contact"],
                "ConvertedOpportunityId": converted_ids["opportunity"],
                "IsDeleted": _lazy(lambda d: d.astype(int), leads.deleted),
                "CreatedDate": leads.created,
                "LastModifiedDate": modified,
                "SystemModstamp": modified,
            },
        )

    def ground_truth(self, leads: _Leads, outcome: dict[str, np.ndarray]) -> None:
        """Store the hidden model's answer for every anchored lead (a batch of rows at a time)."""
        all_anchored = np.flatnonzero(leads.anchored)
        for start in range(0, len(all_anchored), _INSERT_ROWS):
            anchored = all_anchored[start : start + _INSERT_ROWS]
            conversion = outcome["conversion"][anchored]
            columns = [
                leads.id_strings(anchored).tolist(),
                leads.anchor_at[anchored].tolist(),
                outcome["p_true"][anchored].tolist(),
                outcome["label"][anchored].astype(int).tolist(),
                (leads.anchor_at[anchored] + LABEL_WINDOW_DAYS * DAY <= self.as_of)
                .astype(int)
                .tolist(),
                _nullable(conversion, conversion < np.iinfo(np.int64).max).tolist(),
                *(outcome[name][anchored].tolist() for name in ENGAGEMENT_WINDOWS),
                *(
                    outcome[name][anchored].tolist()
                    if self.segment is not None
                    else [None] * len(anchored)
                    for name in CDP_WINDOWS
                ),
            ]
            self.conn.executemany(
                f"INSERT INTO _ground_truth VALUES ({', '.join('?' * len(columns))})",
                zip(*columns, strict=True),
            )

    def run(self) -> None:
        """Generate the whole org, one shard of ``SHARD_LEADS`` leads after the other."""
        self.progress("users", 0, 1)
        self.users()
        campaigns = self.campaigns()
        for shard, first in enumerate(range(0, self.total, SHARD_LEADS)):
            self.shard, self.first_lead = shard, first
            self.n = min(SHARD_LEADS, self.total - first)
            self.generate_shard(campaigns)
            self.first_chunk += math.ceil(self.n / TASK_CHUNK_LEADS)
        self.progress("records", self.total, self.total)

    def generate_shard(self, campaigns: _Campaigns) -> None:
        """Generate the shard's leads and everything that follows from them."""
        companies = self.companies()
        leads = self.leads(companies)
        self.progress("leads", self.first_lead + self.n, self.total)
        outcome = self.activities(leads, companies)
        converted_ids = self.conversions(leads, companies, outcome)
        self.members(leads, campaigns, outcome, converted_ids)
        self.write_leads(leads, companies, outcome, converted_ids)
        self.ground_truth(leads, outcome)
        # customers with known order values and churn, for the other predictions (truth.py)
        customers, orders = write_customers(
            self.conn,
            seed=self.seed,
            leads=self.n,
            as_of=self.as_of,
            shard=self.shard,
            first_customer=self.customers,
            first_order=self.orders,
        )
        self.customers += customers
        self.orders += orders


def _ids_for(prefix: str, sequence: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Ids ``prefix`` + sequence + 1 for masked entries, None elsewhere (vectorised)."""
    result = np.full(len(sequence), None, dtype=object)
    if mask.any():
        chosen = sequence[mask]
        low = int(chosen.min())
        table = np.asarray(make_ids(prefix, low + 1, int(chosen.max()) - low + 1), dtype=object)
        result[mask] = table[chosen - low]
    return result


def generate_org(
    conn: sqlite3.Connection,
    *,
    seed: int,
    leads: int,
    as_of: int,
    on_progress: ProgressCallback | None = None,
    segment: bool = False,
    org: str = "classic",
) -> None:
    """Generate a synthetic org into an empty database that has the sandbox schema.

    Args:
        conn: Connection to the database (the caller commits).
        seed: Random seed.
        leads: Number of leads.
        as_of: End of the generated history, UTC epoch seconds.
        on_progress: Called as ``(stage, done, total)`` while generating.
        segment: Also generate the people's Segment profiles and events; their product usage then
            enters the hidden model (``connector/sandbox/profiles.py``).
        org: ``classic`` (default), ``interacting`` (effects a linear model cannot express,
            deal amounts by industry and seniority) or ``drifting`` (interacting, plus a regime
            shift in the newest ``REGIME_DAYS`` days); see ``docs/sandbox.md``.
    """
    if leads < 1:
        raise ValueError("leads must be positive")
    if get_object("Lead") is None:  # pragma: no cover - schema sanity
        raise RuntimeError("schema has no Lead object")
    _OrgGenerator(conn, seed, leads, as_of, on_progress or (lambda *_: None), segment, org).run()


def integration_user_id() -> str:
    """Return the Id of the integration user the API sessions act as."""
    return make_ids("005", len(SALES_REPS) + 2, 1)[0]
