"""SOQL for the sandbox: a tokenizer, a recursive-descent parser and a compiler to SQLite SQL.

Supported subset (sandbox contract; SOQL reference
https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select.htm):

    SELECT field[, field ...] | COUNT() FROM Object
    [WHERE condition] [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]

Fields may be one-level parent relationships (``Owner.Name``, ``ConvertedOpportunity.IsWon``).
Conditions combine comparisons (``= != <> < <= > >= LIKE IN NOT IN``) with ``AND``, ``OR``,
``NOT`` and parentheses; as in SOQL, ``AND`` and ``OR`` cannot be mixed at one level without
parentheses. Literals are quoted strings with backslash escapes, numbers, ``true``/``false``,
``null``, dates (``2024-05-01``) and unquoted datetimes with ``Z`` or a numeric offset, normalised
to UTC.

Semantics that differ from plain SQL and are emulated here:

- Names of objects and fields are case-insensitive; answers use the describe spelling.
- Text comparisons and ordering are case-insensitive (``COLLATE NOCASE``).
- ``null`` is a value: ``Field != 'x'`` and ``NOT Field = 'x'`` match records where Field is
  null. The compiler pushes ``NOT`` down to the comparisons and makes each negated comparison
  null-inclusive, so SQL three-valued logic never leaks into answers.
- Ascending order puts nulls first and descending order puts them last, as SQLite does.

Every literal becomes a bound parameter; identifiers come only from the schema.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from typing import Literal as TypingLiteral

from connector.sandbox.ids import normalize_id
from connector.sandbox.schema import (
    ID_TYPES,
    NUMBER_TYPES,
    OBJECTS,
    TEXT_TYPES,
    FieldDef,
    ObjectDef,
)

MAX_OFFSET = 2000
"""SOQL rejects OFFSET values above 2,000 (SOQL reference, "OFFSET")."""

KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
        "NULL",
        "TRUE",
        "FALSE",
        "GROUP",
        "HAVING",
        "WITH",
        "FOR",
        "USING",
        "INCLUDES",
        "EXCLUDES",
    }
)


class SoqlError(Exception):
    """A query the sandbox rejects, with the Salesforce error code to answer with.

    Attributes:
        error_code: ``MALFORMED_QUERY``, ``INVALID_FIELD``, ``INVALID_TYPE``, ...
        message: The message, formatted like Salesforce's (query, caret, row and column).
    """

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


def _located(query: str, pos: int, message: str) -> str:
    """Format an error the way Salesforce does: the query, a caret, ``ERROR at Row:R:Column:C``."""
    pos = max(0, min(pos, len(query)))
    row = query.count("\n", 0, pos) + 1
    line_start = query.rfind("\n", 0, pos) + 1
    column = pos - line_start + 1
    line_end = query.find("\n", pos)
    line = query[line_start : line_end if line_end >= 0 else len(query)]
    return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{message}"


# --------------------------------------------------------------------------------------------
# Tokens


TokenKind = TypingLiteral[
    "IDENT", "STRING", "NUMBER", "DATE", "DATETIME", "OP", "COMMA", "LPAREN", "RPAREN", "DOT", "EOF"
]


@dataclass(frozen=True)
class Token:
    r"""One lexical token.

    Attributes:
        kind: Token kind.
        text: The token's source text.
        pos: Offset of the token in the query.
        value: Decoded value of literals (str, int, float, date, or epoch seconds for datetimes).
        like: For strings: the value as a SQLite LIKE pattern with ``\\`` as escape character.
        like_only: For strings: uses ``\\%`` or ``\\_``, escapes only valid in LIKE patterns.
    """

    kind: TokenKind
    text: str
    pos: int
    value: Any = None
    like: str | None = None
    like_only: bool = False


_WS_RE = re.compile(r"\s+")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})"
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_PUNCTUATION: dict[str, TokenKind] = {",": "COMMA", "(": "LPAREN", ")": "RPAREN", ".": "DOT"}
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'"}
_LIKE_SPECIAL = frozenset("%_\\")


def _scan_string(query: str, start: int) -> tuple[Token, int]:
    """Scan a single-quoted string literal starting at ``start`` (the opening quote)."""
    value: list[str] = []
    like: list[str] = []
    like_only = False
    pos = start + 1
    while pos < len(query):
        char = query[pos]
        if char == "'":
            token = Token(
                "STRING", query[start : pos + 1], start, "".join(value), "".join(like), like_only
            )
            return token, pos + 1
        if char == "\\":
            if pos + 1 >= len(query):
                break
            escape = query[pos + 1]
            if escape in _SIMPLE_ESCAPES:
                decoded = _SIMPLE_ESCAPES[escape]
                value.append(decoded)
                like.append(decoded)
                pos += 2
            elif escape == "\\":
                value.append("\\")
                like.append("\\\\")
                pos += 2
            elif escape in "%_":
                # \% and \_ match a literal % or _ and are only legal inside LIKE patterns.
                like_only = True
                value.append(escape)
                like.append("\\" + escape)
                pos += 2
            elif escape == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", query[pos + 2 : pos + 6]):
                decoded = chr(int(query[pos + 2 : pos + 6], 16))
                value.append(decoded)
                like.append("\\" + decoded if decoded in _LIKE_SPECIAL else decoded)
                pos += 6
            else:
                raise SoqlError(
                    "MALFORMED_QUERY",
                    _located(
                        query, pos, f"Invalid string literal: illegal escape sequence '\\{escape}'"
                    ),
                )
            continue
        value.append(char)
        like.append(char)
        pos += 1
    raise SoqlError("MALFORMED_QUERY", _located(query, start, "unterminated string literal"))


def _datetime_value(query: str, match: re.Match[str]) -> int | float:
    """Convert a datetime literal match to UTC epoch seconds (float when it has a fraction).

    The documented format has no fractional seconds, but widely used clients send them and real
    orgs accept them: tap-salesforce bookmarks carry 6 digits (singer-python's ``%f``), Airbyte
    sends milliseconds with a ``+00:00`` offset (api-contracts-realorg section 7.2). Any 0-9
    digits are accepted; the value is kept to the millisecond, the precision Salesforce stores.
    """
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        if zone == "Z":
            offset = dt.timedelta(0)
        else:
            digits = zone[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            if zone[0] == "-":
                offset = -offset
        moment = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=dt.timezone(offset),
        )
    except ValueError as error:
        raise SoqlError(
            "MALFORMED_QUERY", _located(query, match.start(), f"invalid datetime: {error}")
        ) from error
    seconds = int(moment.timestamp())
    millis = int(fraction[:3].ljust(3, "0")) if fraction else 0
    if millis:
        return seconds + millis / 1000
    return seconds


def tokenize(query: str) -> list[Token]:
    """Split a SOQL query into tokens.

    Args:
        query: The SOQL text.

    Returns:
        The tokens, ending with an ``EOF`` token.

    Raises:
        SoqlError: ``MALFORMED_QUERY`` for characters or literals SOQL does not accept.
    """
    tokens: list[Token] = []
    pos = 0
    length = len(query)
    while True:
        whitespace = _WS_RE.match(query, pos)
        if whitespace:
            pos = whitespace.end()
        if pos >= length:
            tokens.append(Token("EOF", "", length))
            return tokens
        char = query[pos]
        if char == "'":
            token, pos = _scan_string(query, pos)
            tokens.append(token)
            continue
        if char.isdigit() or (char in "+-" and pos + 1 < length and query[pos + 1].isdigit()):
            token, pos = _scan_number_or_date(query, pos)
            tokens.append(token)
            continue
        ident = _IDENT_RE.match(query, pos)
        if ident:
            tokens.append(Token("IDENT", ident.group(), pos))
            pos = ident.end()
            continue
        for operator in _OPERATORS:
            if query.startswith(operator, pos):
                tokens.append(Token("OP", operator, pos))
                pos += len(operator)
                break
        else:
            if char in _PUNCTUATION:
                tokens.append(Token(_PUNCTUATION[char], char, pos))
                pos += 1
                continue
            raise SoqlError("MALFORMED_QUERY", _located(query, pos, f"unexpected token: '{char}'"))


def _scan_number_or_date(query: str, pos: int) -> tuple[Token, int]:
    """Scan a number, date or datetime literal at ``pos``."""
    if query[pos].isdigit():
        moment = _DATETIME_RE.match(query, pos)
        if moment:
            end = moment.end()
            _reject_glued(query, end)
            return Token("DATETIME", moment.group(), pos, _datetime_value(query, moment)), end
        day = _DATE_RE.match(query, pos)
        if day:
            end = day.end()
            if end < len(query) and query[end] == "T":
                raise SoqlError(
                    "MALFORMED_QUERY",
                    _located(
                        query,
                        pos,
                        f"invalid datetime: '{_token_text(query, pos)}' "
                        "(a datetime needs seconds and a zone: Z or +hh:mm)",
                    ),
                )
            _reject_glued(query, end)
            try:
                value = dt.date.fromisoformat(day.group())
            except ValueError as error:
                raise SoqlError(
                    "MALFORMED_QUERY", _located(query, pos, f"invalid date: {day.group()}")
                ) from error
            return Token("DATE", day.group(), pos, value), end
    number = _NUMBER_RE.match(query, pos)
    assert number is not None
    end = number.end()
    _reject_glued(query, end)
    text = number.group()
    value: int | float = float(text) if "." in text else int(text)
    return Token("NUMBER", text, pos, value), end


def _token_text(query: str, pos: int) -> str:
    end = pos
    while end < len(query) and not query[end].isspace() and query[end] not in ",()":
        end += 1
    return query[pos:end]


def _reject_glued(query: str, end: int) -> None:
    """Reject a literal immediately followed by an identifier character (``12abc``)."""
    if end < len(query) and (query[end].isalnum() or query[end] in "_:.-+"):
        raise SoqlError(
            "MALFORMED_QUERY",
            _located(query, end, f"unexpected token: '{_token_text(query, end)}'"),
        )


# --------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True)
class FieldPath:
    """A field reference, possibly through a parent relationship (``Owner.Name``)."""

    parts: tuple[str, ...]
    pos: int

    @property
    def text(self) -> str:
        """The reference as written."""
        return ".".join(self.parts)


@dataclass(frozen=True)
class Literal:
    """A literal value.

    Attributes:
        kind: ``string``, ``number``, ``boolean``, ``null``, ``date`` or ``datetime``.
        value: Decoded value (datetimes as UTC epoch seconds).
        pos: Offset in the query.
        text: Source text.
        like: LIKE pattern for strings.
        like_only: The string uses LIKE-only escapes.
    """

    kind: str
    value: Any
    pos: int
    text: str
    like: str | None = None
    like_only: bool = False


@dataclass(frozen=True)
class Comparison:
    """``field op literal``; op is one of ``= != < <= > >= LIKE``."""

    field: FieldPath
    op: str
    value: Literal


@dataclass(frozen=True)
class InList:
    """``field [NOT] IN (literal, ...)``."""

    field: FieldPath
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True)
class Not:
    """``NOT condition``."""

    operand: Expr


@dataclass(frozen=True)
class BoolOp:
    """Conditions joined by one connective (``AND`` or ``OR``)."""

    op: str
    operands: tuple[Expr, ...]


Expr = Comparison | InList | Not | BoolOp


@dataclass(frozen=True)
class OrderItem:
    """One ``ORDER BY`` key; ``nulls_first`` is None when the query leaves it to the default."""

    field: FieldPath
    descending: bool
    nulls_first: bool | None


@dataclass(frozen=True)
class Query:
    """A parsed SOQL query."""

    fields: tuple[FieldPath, ...]
    count: bool
    sobject: str
    sobject_pos: int
    where: Expr | None
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None


# --------------------------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive-descent parser over the token list."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0

    # Token helpers -------------------------------------------------------------------------

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def _advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "EOF":
            self.index += 1
        return token

    def _is_keyword(self, *words: str) -> bool:
        token = self.current
        return token.kind == "IDENT" and token.text.upper() in words

    def _fail(self, token: Token | None = None, message: str | None = None) -> SoqlError:
        token = token or self.current
        if message is None:
            text = token.text if token.kind != "EOF" else "<EOF>"
            message = f"unexpected token: '{text}'"
        return SoqlError("MALFORMED_QUERY", _located(self.query, token.pos, message))

    def _expect_keyword(self, word: str) -> Token:
        if not self._is_keyword(word):
            raise self._fail()
        return self._advance()

    def _expect(self, kind: TokenKind) -> Token:
        if self.current.kind != kind:
            raise self._fail()
        return self._advance()

    # Grammar -------------------------------------------------------------------------------

    def parse(self) -> Query:
        self._expect_keyword("SELECT")
        count = False
        fields: list[FieldPath] = []
        if self._is_keyword("COUNT") and self.tokens[self.index + 1].kind == "LPAREN":
            self._advance()
            self._advance()
            if self.current.kind != "RPAREN":
                raise self._fail(message="only COUNT() without a field is supported")
            self._advance()
            count = True
        else:
            fields.append(self._select_field())
            while self.current.kind == "COMMA":
                self._advance()
                fields.append(self._select_field())
        self._expect_keyword("FROM")
        sobject = self._expect("IDENT")
        if sobject.text.upper() in KEYWORDS:
            raise self._fail(sobject)
        where = None
        if self._is_keyword("WHERE"):
            self._advance()
            where = self._condition()
        order_by: list[OrderItem] = []
        if self._is_keyword("ORDER"):
            self._advance()
            self._expect_keyword("BY")
            order_by.append(self._order_item())
            while self.current.kind == "COMMA":
                self._advance()
                order_by.append(self._order_item())
        limit = offset = None
        if self._is_keyword("LIMIT"):
            self._advance()
            limit = self._non_negative_int()
        if self._is_keyword("OFFSET"):
            self._advance()
            offset_token = self.current
            offset = self._non_negative_int()
            if offset > MAX_OFFSET:
                raise SoqlError(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    _located(
                        self.query, offset_token.pos, f"Maximum SOQL offset allowed is {MAX_OFFSET}"
                    ),
                )
        if self.current.kind != "EOF":
            raise self._fail()
        return Query(
            fields=tuple(fields),
            count=count,
            sobject=sobject.text,
            sobject_pos=sobject.pos,
            where=where,
            order_by=tuple(order_by),
            limit=limit,
            offset=offset,
        )

    def _select_field(self) -> FieldPath:
        token = self.current
        if token.kind == "IDENT" and self.tokens[self.index + 1].kind == "LPAREN":
            raise self._fail(
                token, f"unsupported function: '{token.text}' (the sandbox supports COUNT() only)"
            )
        return self._field_path()

    def _field_path(self) -> FieldPath:
        first = self.current
        if first.kind != "IDENT" or first.text.upper() in KEYWORDS:
            raise self._fail()
        parts = [self._advance().text]
        while self.current.kind == "DOT":
            self._advance()
            part = self._expect("IDENT")
            parts.append(part.text)
        return FieldPath(tuple(parts), first.pos)

    def _non_negative_int(self) -> int:
        token = self.current
        if token.kind != "NUMBER" or not isinstance(token.value, int) or token.value < 0:
            raise self._fail()
        self._advance()
        return int(token.value)

    def _order_item(self) -> OrderItem:
        path = self._field_path()
        descending = False
        nulls_first: bool | None = None
        if self._is_keyword("ASC", "DESC"):
            descending = self._advance().text.upper() == "DESC"
        if self._is_keyword("NULLS"):
            self._advance()
            if not self._is_keyword("FIRST", "LAST"):
                raise self._fail()
            nulls_first = self._advance().text.upper() == "FIRST"
        return OrderItem(path, descending, nulls_first)

    def _condition(self) -> Expr:
        operands = [self._term()]
        connective: str | None = None
        while self._is_keyword("AND", "OR"):
            token = self._advance()
            word = token.text.upper()
            if connective is not None and word != connective:
                # SOQL needs parentheses to mix AND and OR at one level.
                raise self._fail(token)
            connective = word
            operands.append(self._term())
        if connective is None:
            return operands[0]
        return BoolOp(connective, tuple(operands))

    def _term(self) -> Expr:
        if self._is_keyword("NOT"):
            self._advance()
            return Not(self._term())
        if self.current.kind == "LPAREN":
            self._advance()
            inner = self._condition()
            self._expect("RPAREN")
            return inner
        return self._comparison()

    def _comparison(self) -> Expr:
        path = self._field_path()
        token = self.current
        if token.kind == "OP":
            self._advance()
            op = "!=" if token.text == "<>" else token.text
            return Comparison(path, op, self._literal())
        if self._is_keyword("LIKE"):
            self._advance()
            return Comparison(path, "LIKE", self._literal())
        negated = False
        if self._is_keyword("NOT"):
            self._advance()
            negated = True
            if not self._is_keyword("IN"):
                raise self._fail()
        if self._is_keyword("IN"):
            self._advance()
            self._expect("LPAREN")
            if self._is_keyword("SELECT"):
                raise self._fail(message="semi-join subqueries are not supported by the sandbox")
            values = [self._literal()]
            while self.current.kind == "COMMA":
                self._advance()
                values.append(self._literal())
            self._expect("RPAREN")
            return InList(path, tuple(values), negated)
        raise self._fail()

    def _literal(self) -> Literal:
        token = self.current
        kinds = {"STRING": "string", "NUMBER": "number", "DATE": "date", "DATETIME": "datetime"}
        if token.kind in kinds:
            self._advance()
            return Literal(
                kinds[token.kind], token.value, token.pos, token.text, token.like, token.like_only
            )
        if token.kind == "IDENT":
            word = token.text.upper()
            if word in ("TRUE", "FALSE"):
                self._advance()
                return Literal("boolean", word == "TRUE", token.pos, token.text)
            if word == "NULL":
                self._advance()
                return Literal("null", None, token.pos, token.text)
        raise self._fail()


def parse(query: str) -> Query:
    """Parse a SOQL query into its syntax tree.

    Args:
        query: The SOQL text.

    Returns:
        The parsed query.

    Raises:
        SoqlError: ``MALFORMED_QUERY`` (or ``NUMBER_OUTSIDE_VALID_RANGE`` for OFFSET > 2000).
    """
    return _Parser(query).parse()


# --------------------------------------------------------------------------------------------
# Compiler


@functools.lru_cache(maxsize=65536)
def format_datetime(epoch_seconds: int) -> str:
    """Render epoch seconds the way Salesforce serves datetimes: ``2024-05-20T20:49:32.000+0000``.

    Args:
        epoch_seconds: Seconds since the Unix epoch, UTC.

    Returns:
        The formatted datetime.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(epoch_seconds))


def _identity(value: Any) -> Any:
    return value


def _to_bool(value: Any) -> Any:
    return None if value is None else bool(value)


def _to_datetime(value: Any) -> Any:
    return None if value is None else format_datetime(int(value))


def converter_for(definition: FieldDef) -> Callable[[Any], Any]:
    """Return the function that turns a stored value into its JSON value.

    Args:
        definition: The field.

    Returns:
        A one-argument converter.
    """
    if definition.type == "boolean":
        return _to_bool
    if definition.type == "datetime":
        return _to_datetime
    return _identity


@dataclass(frozen=True)
class OutputColumn:
    """One selected field: where its value lands in the record and how to convert it."""

    relationship: str | None
    field_name: str
    converter: Callable[[Any], Any]


@dataclass(frozen=True)
class Relationship:
    """A parent relationship joined by the query."""

    name: str
    alias: str
    target: ObjectDef


@dataclass
class CompiledQuery:
    """SQL for one SOQL query, plus what is needed to shape its records.

    Attributes:
        sobject: The queried object.
        count_only: ``SELECT COUNT()``: only ``totalSize`` is answered.
        ids_sql: Returns the rowids of matching records in query order.
        count_sql: Returns the number of matching records.
        params: Parameters of ``ids_sql`` and ``count_sql``.
        from_sql: ``FROM ... LEFT JOIN ...`` shared by the statements.
        select_list: Columns fetched per record: rowid, Id, then per column, then parent ids.
        columns: Output columns in SELECT order.
        relationships: Joined parent relationships.
    """

    sobject: ObjectDef
    count_only: bool
    ids_sql: str
    count_sql: str
    params: tuple[Any, ...]
    from_sql: str
    select_list: str
    columns: list[OutputColumn] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)

    def page_sql(self, size: int) -> str:
        """Return the statement fetching ``size`` records by rowid (bind the rowids).

        Args:
            size: Number of rowids bound.

        Returns:
            SQL text.
        """
        placeholders = ",".join("?" * size)
        return f"SELECT {self.select_list} {self.from_sql} WHERE t0.rowid IN ({placeholders})"

    def shape(self, rows: Sequence[tuple[Any, ...]], version: str) -> dict[int, dict[str, Any]]:
        """Turn fetched rows into Salesforce JSON records keyed by rowid.

        Args:
            rows: Rows of :meth:`page_sql`.
            version: API version for the ``attributes.url`` of each record.

        Returns:
            Records keyed by rowid (the caller restores query order).
        """
        object_url = f"/services/data/v{version}/sobjects/{self.sobject.name}/"
        object_type = self.sobject.name
        columns = self.columns
        relationship_base = 2 + len(columns)
        parent_index = {
            rel.name: (relationship_base + index, rel.target.name)
            for index, rel in enumerate(self.relationships)
        }
        parent_url = {
            rel.name: f"/services/data/v{version}/sobjects/{rel.target.name}/"
            for rel in self.relationships
        }
        records: dict[int, dict[str, Any]] = {}
        for row in rows:
            record: dict[str, Any] = {
                "attributes": {"type": object_type, "url": object_url + row[1]}
            }
            for position, column in enumerate(columns, start=2):
                if column.relationship is None:
                    record[column.field_name] = column.converter(row[position])
                    continue
                name = column.relationship
                if name not in record:
                    index, target = parent_index[name]
                    parent_id = row[index]
                    record[name] = (
                        None
                        if parent_id is None
                        else {"attributes": {"type": target, "url": parent_url[name] + parent_id}}
                    )
                parent = record[name]
                if parent is not None:
                    parent[column.field_name] = column.converter(row[position])
            records[row[0]] = record
        return records


_SOQL_TYPE_NAMES = {
    "int": "integer",
    "double": "double",
    "currency": "currency",
    "percent": "percent",
    "boolean": "boolean",
    "date": "date",
    "datetime": "dateTime",
    "id": "id",
    "reference": "id",
}


class _Compiler:
    """Compiles one parsed query against the schema."""

    def __init__(
        self,
        source: str,
        query: Query,
        include_deleted: bool,
        objects: Mapping[str, ObjectDef] | None = None,
    ) -> None:
        self.source = source
        self.query = query
        self.include_deleted = include_deleted
        # A sandbox's own schema (fields added through the Tooling API), or the base schema.
        self.objects = OBJECTS if objects is None else objects
        obj = self.objects.get(query.sobject.lower())
        if obj is None:
            raise SoqlError(
                "INVALID_TYPE",
                _located(
                    source,
                    query.sobject_pos,
                    f"sObject type '{query.sobject}' is not supported. If you are attempting to "
                    "use a custom object, be sure to append the '__c' after the entity name. "
                    "Please reference your WSDL or the describe call for the appropriate names.",
                ),
            )
        self.obj = obj
        self.relationships: dict[str, Relationship] = {}
        self.params: list[Any] = []

    # Field resolution -----------------------------------------------------------------------

    def resolve(self, path: FieldPath) -> tuple[str, FieldDef, Relationship | None]:
        """Resolve a field path to (SQL column expression, field, relationship or None)."""
        parts = list(path.parts)
        is_self = len(parts) > 1 and parts[0].lower() == self.obj.name.lower()
        if is_self and self.obj.relationship(parts[0]) is None:
            parts = parts[1:]  # "Lead.Email" on Lead means "Email"
        if len(parts) == 1:
            definition = self.obj.field(parts[0])
            if definition is None:
                raise self._no_such_column(path, parts[0], self.obj)
            return f't0."{definition.name}"', definition, None
        reference = self.obj.relationship(parts[0])
        if reference is None or len(reference.reference_to) != 1 or len(parts) != 2:
            raise SoqlError(
                "INVALID_FIELD",
                _located(
                    self.source,
                    path.pos,
                    f"Didn't understand relationship '{parts[0]}' in field path. If you are "
                    "attempting to use a custom relationship, be sure to append the '__r' after "
                    "the custom relationship name. Please reference your WSDL or the describe "
                    "call for the appropriate names.",
                ),
            )
        target = self.objects.get(reference.reference_to[0].lower())
        assert target is not None
        definition = target.field(parts[1])
        if definition is None:
            raise self._no_such_column(path, parts[1], target)
        relationship = self.relationships.get(reference.relationship_name or "")
        if relationship is None:
            relationship = Relationship(
                name=reference.relationship_name or "",
                alias=f"r{len(self.relationships) + 1}",
                target=target,
            )
            self.relationships[relationship.name] = relationship
        return f'{relationship.alias}."{definition.name}"', definition, relationship

    def _no_such_column(self, path: FieldPath, name: str, obj: ObjectDef) -> SoqlError:
        return SoqlError(
            "INVALID_FIELD",
            _located(
                self.source,
                path.pos,
                f"No such column '{name}' on entity '{obj.name}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            ),
        )

    # Literals ---------------------------------------------------------------------------------

    def _type_error(self, definition: FieldDef, literal: Literal) -> SoqlError:
        if definition.type in TEXT_TYPES:
            wanted, quoted = "string", True
        else:
            wanted = _SOQL_TYPE_NAMES.get(definition.type, definition.type)
            quoted = definition.type in ID_TYPES
        enclosed = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
        return SoqlError(
            "INVALID_FIELD",
            _located(
                self.source,
                literal.pos,
                f"value of filter criterion for field '{definition.name}' must be of type "
                f"{wanted} and {enclosed}",
            ),
        )

    def bind(self, definition: FieldDef, literal: Literal, *, like: bool = False) -> Any:
        """Check a literal against a field's type and return the parameter value to bind."""
        if literal.like_only and not like:
            raise SoqlError(
                "MALFORMED_QUERY",
                _located(
                    self.source,
                    literal.pos,
                    "Invalid string literal: \\% and \\_ are only allowed in LIKE",
                ),
            )
        kind = literal.kind
        field_type = definition.type
        if kind == "null":
            return None
        if field_type in TEXT_TYPES:
            if kind != "string":
                raise self._type_error(definition, literal)
            return literal.like if like else literal.value
        if field_type in ID_TYPES:
            if kind != "string":
                raise self._type_error(definition, literal)
            if like:
                return literal.like
            normalized = normalize_id(literal.value)
            if normalized is None:
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    _located(self.source, literal.pos, f"invalid ID field: {literal.value}"),
                )
            return normalized
        if field_type in NUMBER_TYPES:
            if kind != "number":
                raise self._type_error(definition, literal)
            return literal.value
        if field_type == "boolean":
            if kind != "boolean":
                raise self._type_error(definition, literal)
            return 1 if literal.value else 0
        if field_type == "date":
            if kind != "date":
                raise self._type_error(definition, literal)
            return literal.value.isoformat()
        if field_type == "datetime":
            if kind != "datetime":
                raise self._type_error(definition, literal)
            return literal.value
        raise self._type_error(definition, literal)

    # Conditions -------------------------------------------------------------------------------

    def condition(self, node: Expr, negate: bool = False) -> str:
        """Compile a condition; ``negate`` pushes a NOT down with SOQL's null semantics."""
        if isinstance(node, Not):
            return self.condition(node.operand, not negate)
        if isinstance(node, BoolOp):
            op = node.op
            if negate:
                op = "OR" if op == "AND" else "AND"
            parts = [self.condition(operand, negate) for operand in node.operands]
            return "(" + f" {op} ".join(parts) + ")"
        if isinstance(node, InList):
            return self._in_list(node, negate)
        return self._comparison(node, negate)

    def _comparison(self, node: Comparison, negate: bool) -> str:
        column, definition, _ = self.resolve(node.field)
        op = node.op
        if op == "LIKE":
            if definition.type not in TEXT_TYPES and definition.type not in ID_TYPES:
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    _located(
                        self.source, node.field.pos, f"invalid operator on field: {definition.name}"
                    ),
                )
            if node.value.kind != "string":
                raise self._type_error(definition, node.value)
            self.params.append(self.bind(definition, node.value, like=True))
            if negate:
                return f"({column} IS NULL OR {column} NOT LIKE ? ESCAPE '\\')"
            return f"{column} LIKE ? ESCAPE '\\'"
        value = self.bind(definition, node.value)
        if value is None:
            if op not in ("=", "!="):
                raise SoqlError(
                    "MALFORMED_QUERY",
                    _located(self.source, node.value.pos, f"invalid operator with null: {op}"),
                )
            is_null = (op == "=") != negate
            return f"{column} IS NULL" if is_null else f"{column} IS NOT NULL"
        if definition.type in TEXT_TYPES:
            column = f"{column} COLLATE NOCASE"
        self.params.append(value)
        if op == "=":
            return f"{column} IS NOT ?" if negate else f"{column} = ?"
        if op == "!=":
            return f"{column} = ?" if negate else f"{column} IS NOT ?"
        if negate:
            inverse = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}[op]
            bare = column.removesuffix(" COLLATE NOCASE")
            return f"({bare} IS NULL OR {column} {inverse} ?)"
        return f"{column} {op} ?"

    def _in_list(self, node: InList, negate: bool) -> str:
        column, definition, _ = self.resolve(node.field)
        values = [self.bind(definition, literal) for literal in node.values]
        has_null = any(value is None for value in values)
        present = [value for value in values if value is not None]
        bare = column
        if definition.type in TEXT_TYPES:
            column = f"{column} COLLATE NOCASE"
        negated = node.negated != negate
        parts: list[str] = []
        if present:
            self.params.extend(present)
            placeholders = ",".join("?" * len(present))
            parts.append(f"{column} {'NOT IN' if negated else 'IN'} ({placeholders})")
        if negated:
            # NOT IN matches nulls unless null is listed.
            null_part = f"{bare} IS NOT NULL" if has_null else f"{bare} IS NULL"
            if not present:
                return null_part
            joiner = " AND " if has_null else " OR "
            return "(" + null_part + joiner + parts[0] + ")"
        if has_null:
            parts.append(f"{bare} IS NULL")
        return "(" + " OR ".join(parts) + ")"

    # Whole query ------------------------------------------------------------------------------

    def compile(self) -> CompiledQuery:
        query = self.query
        columns: list[OutputColumn] = []
        select_sql: list[str] = ["t0.rowid", 't0."Id"']
        seen: set[str] = set()
        for path in query.fields:
            column, definition, relationship = self.resolve(path)
            key = f"{relationship.name if relationship else ''}.{definition.name}".lower()
            if key in seen:
                raise SoqlError(
                    "MALFORMED_QUERY",
                    _located(self.source, path.pos, f"duplicate field selected: {path.text}"),
                )
            seen.add(key)
            select_sql.append(column)
            columns.append(
                OutputColumn(
                    relationship.name if relationship else None,
                    definition.name,
                    converter_for(definition),
                )
            )
        where_parts: list[str] = []
        if not self.include_deleted and self.obj.has_is_deleted:
            where_parts.append('t0."IsDeleted" = 0')
        if query.where is not None:
            where_parts.append(self.condition(query.where))
        order_parts: list[str] = []
        for item in query.order_by:
            column, definition, _ = self.resolve(item.field)
            if definition.type in TEXT_TYPES:
                column = f"{column} COLLATE NOCASE"
            direction = "DESC" if item.descending else "ASC"
            nulls = ""
            if item.nulls_first is not None:
                nulls = " NULLS FIRST" if item.nulls_first else " NULLS LAST"
            order_parts.append(f"{column} {direction}{nulls}")
        # A total order makes paging and repeated queries deterministic. Id is unique, so an order
        # that already includes it needs no rowid tiebreak (which keeps the index usable).
        if 't0."Id" ASC' not in order_parts and 't0."Id" DESC' not in order_parts:
            order_parts.append("t0.rowid")
        relationships = list(self.relationships.values())
        for relationship in relationships:
            select_sql.append(f'{relationship.alias}."Id"')
        joins = "".join(
            f' LEFT JOIN "{rel.target.table}" AS {rel.alias} ON {rel.alias}."Id" = '
            f't0."{self.obj.relationship(rel.name).name}"'  # type: ignore[union-attr]
            for rel in relationships
        )
        from_sql = f'FROM "{self.obj.table}" AS t0{joins}'
        where_sql = f" WHERE {' AND '.join(where_parts)}" if where_parts else ""
        limit_sql = ""
        params = list(self.params)
        if query.limit is not None or query.offset is not None:
            limit_sql = " LIMIT ? OFFSET ?"
            params.extend([query.limit if query.limit is not None else -1, query.offset or 0])
        ids_sql = f"SELECT t0.rowid {from_sql}{where_sql} ORDER BY {', '.join(order_parts)}"
        ids_sql += limit_sql
        count_sql = f"SELECT COUNT(*) FROM (SELECT 1 {from_sql}{where_sql}{limit_sql})"
        return CompiledQuery(
            sobject=self.obj,
            count_only=query.count,
            ids_sql=ids_sql,
            count_sql=count_sql,
            params=tuple(params),
            from_sql=from_sql,
            select_list=", ".join(select_sql),
            columns=columns,
            relationships=relationships,
        )


def compile_query(
    source: str,
    *,
    include_deleted: bool = False,
    objects: Mapping[str, ObjectDef] | None = None,
) -> CompiledQuery:
    """Parse and compile a SOQL query against the sandbox schema.

    Args:
        source: The SOQL text.
        include_deleted: ``queryAll``: include soft-deleted (``IsDeleted``) records.
        objects: The schema to compile against, keyed by lower-case object name (default: the
            base schema).

    Returns:
        The compiled query.

    Raises:
        SoqlError: For malformed queries, unknown objects or fields, and type mismatches.
    """
    parsed = parse(source)
    return _Compiler(source, parsed, include_deleted, objects).compile()
