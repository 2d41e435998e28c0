"""Read what sales did with the leads from the store: owners, touches, opportunities, users.

The inputs of ``scoring.impact.compute_impact``, as DataFrames with its column names, read from
the pulled Salesforce tables and the score history. A field the computation needs but the config
does not pull is a :class:`~connector.errors.ConfigError` naming the stream and the field to add.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from connector.errors import ConfigError
from connector.store.database import Store, quote_identifier, raw_table_name

LEAD = raw_table_name("salesforce", "Lead")
TASK = raw_table_name("salesforce", "Task")
OPPORTUNITY = raw_table_name("salesforce", "Opportunity")
USER = raw_table_name("salesforce", "User")
CAMPAIGN_MEMBER = raw_table_name("salesforce", "CampaignMember")

REQUIRED = {
    "Lead": ("OwnerId", "CreatedDate"),
    "Task": ("WhoId", "Type", "CreatedDate"),
}
"""Fields ``leadscore impact`` cannot work without, per stream."""
TEAM_FIELDS = ("Department", "UserRoleId", "Division")
"""User fields that group reps into teams, the first pulled one wins."""


@dataclass
class SalesActivity:
    """The impact computation's inputs.

    Attributes:
        leads: ``lead_id, owner_id, created_at, responded_at, converted_at,
            converted_contact_id, opportunity_id``.
        tasks: ``who_id, type, created_at``.
        scores: ``entity_id, probability, tier, scored_at``: the score history, keeping only
            rows that changed the lead's probability or tier (the point-in-time answer is the
            same).
        opportunities: ``opportunity_id, amount, is_won`` (None when not pulled).
        users: ``user_id, name, team`` (None when not pulled).
        notes: what is missing and what that leaves out.
    """

    leads: pd.DataFrame
    tasks: pd.DataFrame
    scores: pd.DataFrame
    opportunities: pd.DataFrame | None
    users: pd.DataFrame | None
    notes: list[str]


def _require(store: Store, stream: str, table: str) -> list[str]:
    columns = store.table_columns(table)
    if not columns:
        raise ConfigError(
            f"no {stream} records in the store",
            hint=f"add [salesforce.streams.{stream}] to the config and run `leadscore pull`",
        )
    missing = [f for f in REQUIRED.get(stream, ()) if f not in columns]
    if missing:
        raise ConfigError(
            f"{stream}.{missing[0]} is not pulled: leadscore impact needs it",
            hint=f'add "{missing[0]}" to [salesforce.streams.{stream}] fields and pull again',
        )
    return columns


def _optional(columns: list[str], name: str, alias: str, cast: str = "") -> str:
    if name in columns:
        value = quote_identifier(name)
        return f"{cast.format(value) if cast else value} AS {alias}"
    return f"NULL AS {alias}"


def read_sales_activity(store: Store, prediction: str) -> SalesActivity:
    """Read leads, sales touches, score history, opportunities and users.

    Args:
        store: the store.
        prediction: whose score history to read.

    Returns:
        The inputs, with notes on what is not pulled.

    Raises:
        ConfigError: a stream or field the computation needs is not pulled.
    """
    notes: list[str] = []
    lead_columns = _require(store, "Lead", LEAD)
    _require(store, "Task", TASK)
    deleted = "WHERE NOT coalesce(IsDeleted, false)" if "IsDeleted" in lead_columns else ""
    leads = store.query_df(
        f"""SELECT Id AS lead_id, OwnerId AS owner_id,
                   CAST(CreatedDate AS TIMESTAMP) AS created_at,
                   {
            _optional(lead_columns, "ConvertedDate", "converted_at", "CAST({} AS TIMESTAMP)")
        },
                   {_optional(lead_columns, "ConvertedContactId", "converted_contact_id")},
                   {_optional(lead_columns, "ConvertedOpportunityId", "opportunity_id")}
            FROM {LEAD} {deleted}"""
    )
    member_columns = store.table_columns(CAMPAIGN_MEMBER)
    if {"LeadId", "FirstRespondedDate"} <= set(member_columns):
        # Salesforce records the first response as a date: the lead is workable from that day.
        responses = store.query_df(
            f"""SELECT LeadId AS lead_id,
                       min(CAST(FirstRespondedDate AS TIMESTAMP)) AS responded_at
                FROM {CAMPAIGN_MEMBER} WHERE FirstRespondedDate IS NOT NULL GROUP BY LeadId"""
        )
        leads = leads.merge(responses, on="lead_id", how="left")
    else:
        leads["responded_at"] = pd.NaT
        notes.append(
            "campaign responses are not pulled: time to first touch counts from lead creation"
        )
    tasks = store.query_df(
        f"""SELECT WhoId AS who_id, Type AS type, CAST(CreatedDate AS TIMESTAMP) AS created_at
            FROM {TASK} WHERE WhoId IS NOT NULL"""
    )
    scores = store.query_df(
        """SELECT entity_id, probability, tier, scored_at FROM (
               SELECT entity_id, probability, tier,
                      -- a row thinned by retention holds from valid_from on
                      coalesce(valid_from, scored_at) AS scored_at,
                      lag(probability) OVER w AS previous_probability,
                      lag(tier) OVER w AS previous_tier,
                      row_number() OVER w AS n
               FROM score_history WHERE prediction = ?
               WINDOW w AS (PARTITION BY entity_id ORDER BY scored_at, score_run_id))
           WHERE n = 1 OR previous_probability IS DISTINCT FROM probability
                 OR previous_tier IS DISTINCT FROM tier""",
        [prediction],
    )
    opportunities = None
    opportunity_columns = store.table_columns(OPPORTUNITY)
    if {"Amount", "IsWon"} <= set(opportunity_columns):
        opportunities = store.query_df(
            f"""SELECT Id AS opportunity_id, CAST(Amount AS DOUBLE) AS amount,
                       coalesce(CAST(IsWon AS BOOLEAN), false) AS is_won
                FROM {OPPORTUNITY}"""
        )
    else:
        notes.append(
            "opportunities are not pulled (Opportunity with Amount and IsWon): no won amounts"
        )
    if opportunities is not None and leads["opportunity_id"].isna().all():
        notes.append(
            "Lead.ConvertedOpportunityId is not pulled: won opportunities cannot be linked to leads"
        )
    users = None
    user_columns = store.table_columns(USER)
    if "Name" in user_columns:
        team = next((f for f in TEAM_FIELDS if f in user_columns), None)
        users = store.query_df(
            f"""SELECT Id AS user_id, Name AS name,
                       {quote_identifier(team) if team else "NULL"} AS team
                FROM {USER}"""
        )
    else:
        notes.append("users are not pulled (User with Name): reps are shown by their id")
    return SalesActivity(leads, tasks, scores, opportunities, users, notes)


def recent_arrivals(store: Store, prediction: str, days: int) -> pd.Series:
    """Latest probabilities of the leads created in the last ``days`` days of the data.

    The period ends at the newest lead's creation, so a store pulled a while ago still shows
    its own recent arrivals.

    Args:
        store: the store.
        prediction: whose scores.
        days: length of the period.

    Returns:
        One probability per lead (empty when the leads or scores are not there).
    """
    if not store.table_exists(LEAD) or "CreatedDate" not in store.table_columns(LEAD):
        return pd.Series(dtype=float)
    frame = store.query_df(
        f"""WITH ends AS (SELECT max(CAST(CreatedDate AS TIMESTAMP)) AS newest FROM {LEAD})
            SELECT s.probability FROM score_history s
            JOIN {LEAD} l ON l.Id = s.entity_id, ends
            WHERE s.prediction = ? AND s.probability IS NOT NULL
              AND s.score_run_id = (SELECT max(score_run_id) FROM score_run
                                    WHERE prediction = ? AND NOT coalesce(partial, false))
              AND CAST(l.CreatedDate AS TIMESTAMP) > ends.newest - to_days(CAST(? AS INTEGER))""",
        [prediction, prediction, days],
    )
    return frame["probability"].astype(float)


def recent_leads(store: Store, days: int) -> pd.DataFrame:
    """Leads created in the last ``days`` days of the data (ending at the newest lead).

    Args:
        store: the store.
        days: length of the period.

    Returns:
        ``lead_id, owner_id`` (owner None when OwnerId is not pulled); empty without leads.
    """
    columns = store.table_columns(LEAD)
    if "CreatedDate" not in columns:
        return pd.DataFrame({"lead_id": [], "owner_id": []})
    owner = "OwnerId" if "OwnerId" in columns else "NULL"
    return store.query_df(
        f"""WITH ends AS (SELECT max(CAST(CreatedDate AS TIMESTAMP)) AS newest FROM {LEAD})
            SELECT Id AS lead_id, {owner} AS owner_id FROM {LEAD}, ends
            WHERE CAST(CreatedDate AS TIMESTAMP) > ends.newest - to_days(CAST(? AS INTEGER))""",
        [days],
    )
