"""SOQL tokenizer, parser and compiler, tested directly and against a tiny SQLite table."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from connector.sandbox.ids import make_id
from connector.sandbox.schema import OBJECTS, create_table_sql
from connector.sandbox.soql import (
    BoolOp,
    Comparison,
    InList,
    Not,
    SoqlError,
    compile_query,
    format_datetime,
    parse,
    tokenize,
)


def epoch(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


# --------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenize_kinds_and_positions():
    tokens = tokenize("SELECT Id FROM Lead WHERE NumberOfEmployees >= -5 AND Name != 'x'")
    kinds = [token.kind for token in tokens]
    assert kinds == [
        "IDENT",
        "IDENT",
        "IDENT",
        "IDENT",
        "IDENT",
        "IDENT",
        "OP",
        "NUMBER",
        "IDENT",
        "IDENT",
        "OP",
        "STRING",
        "EOF",
    ]
    assert tokens[7].value == -5
    assert tokens[1].pos == 7


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r"'O\'Brien'", "O'Brien"),
        (r"'a\\b'", "a\\b"),
        (r"'tab\there'", "tab\there"),
        (r"'line\nbreak'", "line\nbreak"),
        (r"'quote\"d'", 'quote"d'),
        (r"'\u00e9t\u00e9'", "été"),
    ],
)
def test_string_escapes(literal, value):
    token = tokenize(literal)[0]
    assert token.kind == "STRING"
    assert token.value == value


def test_like_escapes_are_kept_for_like_patterns():
    token = tokenize(r"'50\%\_off%'")[0]
    assert token.like_only
    assert token.value == "50%_off%"
    assert token.like == r"50\%\_off%"


def test_backslash_is_escaped_in_like_pattern():
    token = tokenize(r"'a\\%'")[0]
    assert token.value == "a\\%"
    assert token.like == "a\\\\%"


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("2024-05-01T00:00:00Z", epoch("2024-05-01T00:00:00")),
        ("2024-05-01T00:00:00.000Z", epoch("2024-05-01T00:00:00")),
        ("2024-05-01T00:00:00+00:00", epoch("2024-05-01T00:00:00")),
        ("2024-05-01T00:00:00+0000", epoch("2024-05-01T00:00:00")),
        ("2024-05-01T00:00:00-05:00", epoch("2024-05-01T05:00:00")),
        ("2024-05-01T02:30:00+02:30", epoch("2024-05-01T00:00:00")),
        ("2024-05-01T00:00:00.500Z", epoch("2024-05-01T00:00:00") + 0.5),
    ],
)
def test_datetime_literals_normalise_to_utc(literal, expected):
    token = tokenize(literal)[0]
    assert token.kind == "DATETIME"
    assert token.value == expected


def test_date_literal():
    token = tokenize("2024-05-01")[0]
    assert token.kind == "DATE"
    assert token.value == dt.date(2024, 5, 1)


@pytest.mark.parametrize(
    "source",
    [
        "SELECT Id FROM Lead WHERE Name = 'unterminated",
        r"SELECT Id FROM Lead WHERE Name = 'bad \q escape'",
        "SELECT Id FROM Lead WHERE CreatedDate > 2024-05-01T00:00:00",  # no zone
        "SELECT Id FROM Lead WHERE CreatedDate > 2024-13-45",
        "SELECT Id FROM Lead WHERE Name = 12abc",
        "SELECT Id FROM Lead WHERE Name = #",
    ],
)
def test_tokenizer_errors_are_malformed_query(source):
    with pytest.raises(SoqlError) as error:
        compile_query(source)
    assert error.value.error_code == "MALFORMED_QUERY"


# --------------------------------------------------------------------------------------------
# Parser


def test_parse_full_grammar():
    query = parse(
        "select Id, Owner.Name from lead where (Industry = 'Software' or Industry = 'Retail') "
        "and not IsConverted = true order by CreatedDate desc nulls last, Id limit 10 offset 5"
    )
    assert [path.text for path in query.fields] == ["Id", "Owner.Name"]
    assert query.sobject == "lead"
    assert isinstance(query.where, BoolOp) and query.where.op == "AND"
    inner, negated = query.where.operands
    assert isinstance(inner, BoolOp) and inner.op == "OR"
    assert isinstance(negated, Not) and isinstance(negated.operand, Comparison)
    assert query.order_by[0].descending and query.order_by[0].nulls_first is False
    assert not query.order_by[1].descending and query.order_by[1].nulls_first is None
    assert (query.limit, query.offset) == (10, 5)


def test_parse_in_and_not_in():
    query = parse("SELECT Id FROM Lead WHERE Industry NOT IN ('a', 'b') AND Rating IN ('Hot')")
    first, second = query.where.operands  # type: ignore[union-attr]
    assert isinstance(first, InList) and first.negated and len(first.values) == 2
    assert isinstance(second, InList) and not second.negated


def test_parse_count():
    query = parse("SELECT COUNT() FROM Lead")
    assert query.count and query.fields == ()


@pytest.mark.parametrize(
    "source",
    [
        "SELECT FROM Lead",
        "SELECT Id Lead",
        "SELECT Id FROM Lead WHERE",
        "SELECT Id FROM Lead WHERE Name = 'a' AND Name = 'b' OR Name = 'c'",  # mixed AND/OR
        "SELECT Id FROM Lead WHERE (Name = 'a'",
        "SELECT Id FROM Lead ORDER BY",
        "SELECT Id FROM Lead LIMIT -1",
        "SELECT Id FROM Lead LIMIT 1.5",
        "SELECT Id FROM Lead extra",
        "SELECT COUNT(Id) FROM Lead",
        "SELECT MAX(NumberOfEmployees) FROM Lead",
        "SELECT Id FROM Lead WHERE Id IN (SELECT LeadId FROM CampaignMember)",
        "SELECT Id FROM Lead WHERE Name NOT LIKE 'a%'",
        "SELECT Id, Id FROM Lead",
    ],
)
def test_parse_errors(source):
    with pytest.raises(SoqlError) as error:
        compile_query(source)
    assert error.value.error_code == "MALFORMED_QUERY"


def test_error_message_points_at_the_token():
    with pytest.raises(SoqlError) as error:
        compile_query("SELECT Id FROM Lead WHERE Nme = 'x'")
    assert error.value.error_code == "INVALID_FIELD"
    assert "ERROR at Row:1:Column:27" in error.value.message
    assert "No such column 'Nme' on entity 'Lead'" in error.value.message


def test_offset_above_2000_is_out_of_range():
    with pytest.raises(SoqlError) as error:
        compile_query("SELECT Id FROM Lead LIMIT 10 OFFSET 2001")
    assert error.value.error_code == "NUMBER_OUTSIDE_VALID_RANGE"


# --------------------------------------------------------------------------------------------
# Compiler: schema validation


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("SELECT Id FROM Leed", "INVALID_TYPE"),
        ("SELECT Foo FROM Lead", "INVALID_FIELD"),
        ("SELECT Foo.Name FROM Lead", "INVALID_FIELD"),
        ("SELECT Owner.Foo FROM Lead", "INVALID_FIELD"),
        ("SELECT Who.Name FROM Task", "INVALID_FIELD"),  # polymorphic: not supported
        ("SELECT Id FROM Lead WHERE NumberOfEmployees = '5'", "INVALID_FIELD"),
        ("SELECT Id FROM Lead WHERE Company = 5", "INVALID_FIELD"),
        ("SELECT Id FROM Lead WHERE CreatedDate > 2024-05-01", "INVALID_FIELD"),
        ("SELECT Id FROM Lead WHERE ConvertedDate > 2024-05-01T00:00:00Z", "INVALID_FIELD"),
        ("SELECT Id FROM Lead WHERE IsConverted = 'true'", "INVALID_FIELD"),
        ("SELECT Id FROM Lead WHERE Id = 'nope'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Lead WHERE NumberOfEmployees LIKE '5%'", "INVALID_QUERY_FILTER_OPERATOR"),
        (r"SELECT Id FROM Lead WHERE Company = 'a\%'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Lead WHERE Company < null", "MALFORMED_QUERY"),
    ],
)
def test_compile_errors(source, code):
    with pytest.raises(SoqlError) as error:
        compile_query(source)
    assert error.value.error_code == code, error.value.message


def test_names_are_case_insensitive_and_answered_in_describe_spelling():
    compiled = compile_query("select ID, email, owner.NAME from LEAD")
    assert compiled.sobject.name == "Lead"
    assert [(c.relationship, c.field_name) for c in compiled.columns] == [
        (None, "Id"),
        (None, "Email"),
        ("Owner", "Name"),
    ]


def test_literals_are_parameters_not_sql_text():
    compiled = compile_query(r"SELECT Id FROM Lead WHERE Company = 'x\'; DROP TABLE Lead; --'")
    assert "DROP" not in compiled.ids_sql
    assert any("DROP" in str(param) for param in compiled.params)


def test_query_excludes_deleted_unless_query_all():
    assert '"IsDeleted" = 0' in compile_query("SELECT Id FROM Lead").ids_sql
    assert '"IsDeleted"' not in compile_query("SELECT Id FROM Lead", include_deleted=True).ids_sql
    assert '"IsDeleted"' not in compile_query("SELECT Id FROM User").ids_sql  # User has none


def test_order_by_id_uses_no_rowid_tiebreak():
    compiled = compile_query("SELECT Id FROM Lead ORDER BY SystemModstamp, Id")
    assert compiled.ids_sql.endswith('ORDER BY t0."SystemModstamp" ASC, t0."Id" ASC')
    assert compile_query("SELECT Id FROM Lead").ids_sql.endswith("ORDER BY t0.rowid")


# --------------------------------------------------------------------------------------------
# Compiler: semantics, run against SQLite


LEAD = OBJECTS["lead"]
USER_ID = make_id("005", 1)


def lead_id(n: int) -> str:
    return make_id("00Q", n)


ROWS = [
    # n, Company, Industry, Employees, IsConverted, ConvertedDate, CreatedDate, IsDeleted
    (1, "Acme", "Software", 50, 1, "2024-05-02", "2024-05-01T10:00:00", 0),
    (2, "acme labs", "Retail", 5, 0, None, "2024-05-01T00:00:00", 0),
    (3, "50% Off Inc", None, None, 0, None, "2024-04-30T23:59:59", 0),
    (4, "O'Brien", "Software", 5000, 0, None, "2024-05-03T12:00:00", 0),
    (5, "Gone", "Retail", 10, 0, None, "2024-05-04T00:00:00", 1),
]


@pytest.fixture(scope="module")
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(create_table_sql(LEAD))
    conn.execute(create_table_sql(OBJECTS["user"]))
    conn.execute('INSERT INTO "User" ("Id", "Name") VALUES (?, ?)', [USER_ID, "Avery Chen"])
    for n, company, industry, employees, converted, conv_date, created, deleted in ROWS:
        conn.execute(
            'INSERT INTO "Lead" ("Id", "Company", "Industry", "NumberOfEmployees", "IsConverted",'
            ' "ConvertedDate", "CreatedDate", "IsDeleted", "OwnerId", "SystemModstamp") '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                lead_id(n),
                company,
                industry,
                employees,
                converted,
                conv_date,
                epoch(created),
                deleted,
                USER_ID if n != 2 else None,
                epoch(created),
            ],
        )
    return conn


def matches(db: sqlite3.Connection, where: str, include_deleted: bool = False) -> list[int]:
    compiled = compile_query(f"SELECT Id FROM Lead WHERE {where}", include_deleted=include_deleted)
    rowids = [row[0] for row in db.execute(compiled.ids_sql, compiled.params)]
    return rowids


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Company = 'ACME'", [1]),  # case-insensitive equality
        ("Company LIKE 'acme%'", [1, 2]),
        (r"Company LIKE '50\% %'", [3]),  # escaped wildcard
        ("Company LIKE 'O\\'B%'", [4]),
        ("Industry = null", [3]),
        ("Industry != null", [1, 2, 4]),
        ("Industry != 'Software'", [2, 3]),  # null counts as "not equal"
        ("NOT Industry = 'Software'", [2, 3]),
        ("NOT (Industry = 'Software' AND NumberOfEmployees > 10)", [2, 3]),
        ("NOT (Industry = 'Software' OR NumberOfEmployees > 5)", [2, 3]),
        ("Industry IN ('software', 'RETAIL')", [1, 2, 4]),
        ("Industry NOT IN ('Software')", [2, 3]),
        ("Industry IN ('Software', null)", [1, 3, 4]),
        ("Industry NOT IN ('Software', null)", [2]),
        ("NOT Industry IN ('Software')", [2, 3]),
        ("NumberOfEmployees < 50", [2]),
        ("NOT NumberOfEmployees < 50", [1, 3, 4]),  # null is "not less than"
        ("NumberOfEmployees >= 50 OR (Industry = 'Retail' AND NumberOfEmployees <= 5)", [1, 2, 4]),
        ("((Company = 'Acme'))", [1]),
        ("IsConverted = true", [1]),
        ("IsConverted = false", [2, 3, 4]),
        ("ConvertedDate = 2024-05-02", [1]),
        ("CreatedDate >= 2024-05-01T00:00:00Z", [1, 2, 4]),
        ("CreatedDate > 2024-04-30T20:00:00-04:00", [1, 4]),  # = 2024-05-01T00:00:00Z
        ("CreatedDate < 2024-05-01T00:00:00.000+0000", [3]),
        ("Id = '" + lead_id(4)[:15] + "'", [4]),  # 15-character ids are accepted
        ("Id IN ('" + lead_id(1) + "', '" + lead_id(2).lower() + "')", [1, 2]),
        ("Owner.Name = 'Avery Chen'", [1, 3, 4]),
        ("Owner.Name = null", [2]),
    ],
)
def test_where_semantics(db, where, expected):
    assert matches(db, where) == expected


def test_query_all_includes_deleted(db):
    assert matches(db, "Industry = 'Retail'") == [2]
    assert matches(db, "Industry = 'Retail'", include_deleted=True) == [2, 5]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("NumberOfEmployees", [3, 2, 1, 4]),  # ASC: nulls first
        ("NumberOfEmployees DESC", [4, 1, 2, 3]),  # DESC: nulls last
        ("NumberOfEmployees NULLS LAST", [2, 1, 4, 3]),
        ("NumberOfEmployees DESC NULLS FIRST", [3, 4, 1, 2]),
        ("Company", [1, 2, 3, 4]),  # case-insensitive: Acme, acme labs, 50%..., O'Brien
        ("Industry DESC, CreatedDate", [1, 4, 2, 3]),
    ],
)
def test_order_by(db, order, expected):
    compiled = compile_query(f"SELECT Id FROM Lead ORDER BY {order}")
    rows = [row[0] for row in db.execute(compiled.ids_sql, compiled.params)]
    if order == "Company":
        expected = [3, 1, 2, 4]  # digits sort before letters
    assert rows == expected


def test_limit_offset_and_count(db):
    compiled = compile_query("SELECT Id FROM Lead ORDER BY CreatedDate LIMIT 2 OFFSET 1")
    assert [row[0] for row in db.execute(compiled.ids_sql, compiled.params)] == [2, 1]
    counted = compile_query("SELECT COUNT() FROM Lead WHERE Industry != null")
    assert counted.count_only
    assert db.execute(counted.count_sql, counted.params).fetchone()[0] == 3
    limited = compile_query("SELECT COUNT() FROM Lead LIMIT 2")
    assert db.execute(limited.count_sql, limited.params).fetchone()[0] == 2


def test_shape_records(db):
    compiled = compile_query(
        "SELECT Id, Company, IsConverted, CreatedDate, ConvertedDate, Owner.Name FROM Lead "
        "ORDER BY CreatedDate"
    )
    rowids = [row[0] for row in db.execute(compiled.ids_sql, compiled.params)]
    rows = db.execute(compiled.page_sql(len(rowids)), rowids).fetchall()
    records = compiled.shape(rows, "59.0")
    first = records[1]
    assert list(first) == [
        "attributes",
        "Id",
        "Company",
        "IsConverted",
        "CreatedDate",
        "ConvertedDate",
        "Owner",
    ]
    assert first["attributes"] == {
        "type": "Lead",
        "url": f"/services/data/v59.0/sobjects/Lead/{lead_id(1)}",
    }
    assert first["IsConverted"] is True
    assert first["CreatedDate"] == "2024-05-01T10:00:00.000+0000"
    assert first["ConvertedDate"] == "2024-05-02"
    assert first["Owner"] == {
        "attributes": {"type": "User", "url": f"/services/data/v59.0/sobjects/User/{USER_ID}"},
        "Name": "Avery Chen",
    }
    assert records[2]["Owner"] is None


def test_format_datetime():
    assert format_datetime(0) == "1970-01-01T00:00:00.000+0000"
    assert format_datetime(epoch("2024-05-20T20:49:32")) == "2024-05-20T20:49:32.000+0000"
