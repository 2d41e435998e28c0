"""Audiences: named SQL boolean expressions over the scores joined with the entity's fields.

An audience such as "hot new leads" is ``tier = 'A' AND created_at >= scored_at - INTERVAL 7 DAY``.
The expression is checked with DuckDB's own parser (``json_serialize_sql``) and its syntax tree is
walked: it must be one expression (no statement, subquery, window, aggregate or parameter), every
function must be on an allow-list of scalar functions, and every column must be a score column or a
field of the entity. It is then evaluated by DuckDB over one relation:

- score columns (:data:`SCORE_COLUMNS`): ``entity_id, probability, score, tier, percentile,
  predicted_class, predicted_value, model_version, scored_at``;
- ``created_at``: the entity's creation time (``CreatedDate`` for leads);
- every column of the entity's table (a score column wins a name clash).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from connector.store import quote_identifier
from scoring.events import Entity
from scoring.tiers import percentiles, percentiles_in

if TYPE_CHECKING:  # the config validates audiences without pandas; scoring imports it
    import pandas as pd

SCORE_COLUMNS: tuple[str, ...] = (
    "entity_id",
    "probability",
    "score",
    "tier",
    "percentile",
    "predicted_class",
    "predicted_value",
    "model_version",
    "scored_at",
)
CREATED_AT = "created_at"

# Expression node classes of DuckDB's syntax tree that an audience may use.
_ALLOWED_CLASSES = frozenset(
    {
        "COLUMN_REF",
        "CONSTANT",
        "COMPARISON",
        "CONJUNCTION",
        "OPERATOR",
        "FUNCTION",
        "CASE",
        "CAST",
        "BETWEEN",
        "TYPE",
    }
)
# Scalar functions an audience may call (operators such as ``+``, ``||`` and ``~~`` (LIKE) are
# allowed too). Anything reading files, settings or the environment, aggregates and table
# functions are not.
ALLOWED_FUNCTIONS = frozenset(
    """
    now current_date current_timestamp get_current_timestamp today
    to_days to_hours to_minutes to_seconds to_weeks to_months to_years trunc
    date_diff datediff date_sub date_trunc datetrunc date_part datepart year month day hour
    minute dayofweek dayofyear week yearweek quarter epoch age make_date strftime strptime
    try_strptime
    lower upper lcase ucase length strlen trim ltrim rtrim starts_with ends_with contains prefix
    suffix regexp_matches regexp_full_match strpos instr position left right substring substr
    concat replace split_part
    coalesce ifnull nullif abs round floor ceil ceiling least greatest sign sqrt ln log log10
    pow power exp isnan isfinite
    list_value list_contains array_contains
    """.split()  # noqa: SIM905 - a word list reads better than 90 quoted strings
)


class AudienceError(ValueError):
    """An audience expression that is not a safe boolean expression over the known columns."""


def _parse(expression: str) -> dict[str, Any]:
    """DuckDB's syntax tree of ``SELECT * FROM t WHERE (expression)``."""
    if ";" in expression:
        raise AudienceError("must be one expression; ';' is not allowed")
    con = duckdb.connect()
    try:
        text = con.execute(
            "SELECT json_serialize_sql(?)", [f"SELECT * FROM t WHERE ({expression}\n)"]
        ).fetchall()[0][0]
    finally:
        con.close()
    tree = json.loads(text)
    if tree.get("error"):
        message = str(tree.get("error_message") or "syntax error").split("\n")[0]
        raise AudienceError(f"is not a valid SQL expression: {message}")
    statements = tree.get("statements") or []
    node = statements[0].get("node") if len(statements) == 1 else None
    if (
        not isinstance(node, dict)
        or node.get("type") != "SELECT_NODE"
        or node.get("modifiers")
        or (node.get("cte_map") or {}).get("map")
        or node.get("group_expressions")
        or node.get("having")
        or node.get("qualify")
        or (node.get("from_table") or {}).get("table_name") != "t"
        or node.get("where_clause") is None
    ):
        raise AudienceError("must be a boolean expression only, not a statement or a query")
    return node["where_clause"]


def _walk(node: Any, columns: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, columns)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("class")
    if kind is not None:
        if kind not in _ALLOWED_CLASSES:
            what = {
                "SUBQUERY": "a subquery",
                "WINDOW": "a window or aggregate function",
                "PARAMETER": "a parameter",
                "STAR": "'*'",
                "LAMBDA": "a lambda",
            }.get(kind, f"a {kind.lower()} expression")
            raise AudienceError(f"may not contain {what}")
        if kind == "COLUMN_REF":
            names = node.get("column_names") or []
            if len(names) != 1:
                raise AudienceError(
                    f"column '{'.'.join(names)}': name columns without a table prefix"
                )
            columns.add(str(names[0]))
        if kind == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if node.get("schema") or node.get("catalog"):
                raise AudienceError(f"function '{name}' may not be qualified")
            if name.replace("_", "").isalnum() and name not in ALLOWED_FUNCTIONS:
                raise AudienceError(
                    f"function '{name}' is not allowed in an audience (scalar functions such as "
                    "lower, coalesce, date_diff, now are)"
                )
    for value in node.values():
        _walk(value, columns)


def validate_expression(expression: str, columns: Iterable[str] | None = None) -> frozenset[str]:
    """Check that an audience expression is one safe boolean expression over known columns.

    Args:
        expression: e.g. ``tier = 'A' AND created_at >= DATE '2024-02-11'``.
        columns: the columns it may use (case-insensitive); None checks the structure only.

    Returns:
        The columns it references, lower-case.

    Raises:
        AudienceError: a statement, a subquery, a disallowed function, an unknown column, or not
            valid SQL; the message says which.
    """
    if not expression or not expression.strip():
        raise AudienceError("is empty")
    used: set[str] = set()
    _walk(_parse(expression), used)
    lowered = {c.lower() for c in used}
    if columns is not None:
        known = {c.lower(): c for c in columns}
        for name in sorted(used, key=str.lower):
            if name.lower() not in known:
                close = difflib.get_close_matches(name.lower(), list(known), n=1)
                raise AudienceError(
                    f"unknown column '{name}'"
                    + (f" (did you mean '{known[close[0]]}'?)" if close else "")
                    + f"; columns: {', '.join(sorted(known.values()))}"
                )
    return frozenset(lowered)


def score_frame(
    scores: pd.DataFrame, task: str, population: np.ndarray | None = None
) -> pd.DataFrame:
    """The latest scores with every score column an audience or an output can name.

    Args:
        scores: one scoring run (``entity_id, model_version, probability, score, tier,
            scored_at``...).
        task: ``binary``, ``multiclass`` or ``regression``.
        population: the whole run's probabilities, sorted, when ``scores`` is one batch of it
            (percentiles are of the run, not of the batch).

    Returns:
        The scores plus ``percentile`` (0-100, of the probability or predicted value in this
        run), ``predicted_class`` (multiclass: the tier) and ``predicted_value`` (regression).
    """
    out = scores.copy()
    out["entity_id"] = out["entity_id"].astype(str)
    probability = out["probability"].astype(float).to_numpy()
    ranks = (
        percentiles(probability) if population is None else percentiles_in(probability, population)
    )
    out["percentile"] = np.rint(ranks * 100).astype(int)
    out["predicted_class"] = out["tier"] if task == "multiclass" else None
    out["predicted_value"] = out["probability"] if task == "regression" else np.nan
    if task == "regression":
        out["probability"] = np.nan
    return out


def audience_columns(entity_columns: Iterable[str]) -> list[str]:
    """Every column an audience of an entity with these table columns may name."""
    return [*SCORE_COLUMNS, CREATED_AT, *entity_columns]


def evaluate_audiences(
    con: duckdb.DuckDBPyConnection,
    scores: pd.DataFrame,
    entity: Entity,
    audiences: dict[str, str],
) -> dict[str, set[str]]:
    """The members of each audience: the entities whose row satisfies its expression.

    Args:
        con: store connection.
        scores: :func:`score_frame` of the latest scoring run.
        entity: the scored entity (its table is joined by id).
        audiences: audience name -> expression.

    Returns:
        Audience name -> member entity ids.

    Raises:
        AudienceError: an expression names a column the store does not have.
    """
    q = quote_identifier
    table_columns = [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [entity.table],
        ).fetchall()
    ]
    if not table_columns:
        raise AudienceError(
            f"the store has no table {entity.table} to evaluate audiences over (pull first)"
        )
    taken = {c.lower() for c in (*SCORE_COLUMNS, CREATED_AT)}
    extra = [c for c in table_columns if c.lower() not in taken]
    created = f"e.{q(entity.created_column)}" if entity.created_column else "NULL::TIMESTAMP"
    base = scores[list(SCORE_COLUMNS)]
    out: dict[str, set[str]] = {}
    con.register("_audience_scores", base)
    try:
        select = ", ".join(
            [*(f"s.{q(c)}" for c in SCORE_COLUMNS), f"{created} AS {CREATED_AT}"]
            + [f"e.{q(c)}" for c in extra]
        )
        relation = (
            f"SELECT {select} FROM _audience_scores s LEFT JOIN {q(entity.table)} e "
            f"ON CAST(e.{q(entity.id_column)} AS VARCHAR) = s.entity_id"
        )
        for name, expression in audiences.items():
            try:
                validate_expression(expression, audience_columns(table_columns))
            except AudienceError as exc:
                raise AudienceError(f"audience '{name}': {exc}") from None
            rows = con.execute(
                f"SELECT entity_id FROM ({relation}) WHERE coalesce(({expression}\n), false)"
            ).fetchall()
            out[name] = {str(r[0]) for r in rows}
    finally:
        con.unregister("_audience_scores")
    return out
