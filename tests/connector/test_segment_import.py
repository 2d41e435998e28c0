"""Importing Segment warehouse / Profiles Sync exports: bad lines of every kind, formats, reruns."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from connector.errors import ConfigError
from connector.files import SKIP_REASONS, import_segment_export
from connector.segment import DEFAULT_ID_TYPES
from connector.store import Store

GOOD = {
    "type": "track",
    "event": "Feature Used",
    "userId": "u1",
    "timestamp": "2025-05-01T10:00:00Z",
}


def track(message_id: str, **fields) -> str:
    return json.dumps({**GOOD, "messageId": message_id, **fields})


# line number -> (content, expected reason); None = imported
LINES = {
    1: (track("m1", properties={"feature": "api"}), None),
    2: ("", "blank"),
    3: ("{not json", "bad_json"),
    4: (json.dumps({**GOOD, "messageId": "m4", "timestamp": None}), "missing_timestamp"),
    5: (json.dumps({k: v for k, v in GOOD.items() if k != "timestamp"}), "missing_timestamp"),
    6: (track("m6", timestamp="last tuesday"), "bad_timestamp"),
    7: (track("m7", timestamp="2025-13-45T00:00:00Z"), "bad_timestamp"),
    8: (track("m8", properties={"blob": "x" * 40_000}), "oversize_message"),
    9: (track("m9", type="page", name="Home"), "other_type"),
    10: (
        json.dumps({"type": "track", "event": "X", "timestamp": "2025-05-01T10:00:00Z"}),
        "missing_identity",
    ),
    11: (track("m11", event=""), "missing_event"),
    12: ("[1, 2, 3]", "bad_json"),
    13: ('"just a string"', "bad_json"),
    14: (track("m14", userId=None, anonymousId="a-1", timestamp="2025-05-01T12:00:00+02:00"), None),
    15: (
        track("m14", userId=None, anonymousId="a-1", timestamp="2025-05-01T12:00:00+02:00"),
        "duplicate",
    ),
    16: ("\x01garbage\x01with the reader's delimiter", "bad_json"),
    17: (track("m17", userId=42, properties={"revenue": 12.5}), "wrong_type"),
    18: (track("m18", event={"name": "Signed Up"}), "wrong_type"),
    19: (track("m19", anonymousId=["a", "b"], userId=None), "wrong_type"),
    20: (track("m20", properties={"revenue": 12.5}, context={"userId": 7}), None),
}


def write_lines(path: Path, lines: dict[int, tuple[str, str | None]], tail: bytes = b"") -> Path:
    body = "\n".join(content for content, _ in lines.values()) + "\n"
    path.write_bytes(body.encode() + tail)
    return path


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store.duckdb") as s:
        yield s


def test_every_kind_of_bad_line_is_counted_reported_with_its_line_and_skipped(store, tmp_path):
    # an invalid UTF-8 line makes DuckDB's reader refuse the file: it must still be imported
    path = write_lines(
        tmp_path / "tracks.jsonl", LINES, tail=b'{"event": "\xff\xfe", "userId": "u"}\n'
    )
    result = import_segment_export(store, path, "tracks")
    expected: dict[str, int] = {}
    for _, reason in LINES.values():
        if reason not in (None, "blank", "duplicate"):
            expected[reason] = expected.get(reason, 0) + 1
    expected["bad_encoding"] = 1
    assert result.skipped == dict(sorted(expected.items()))
    assert set(result.skipped) == set(SKIP_REASONS) - {"unknown_identity_type"}
    assert result.lines == len(LINES) - 1 + 1  # non-blank lines, the undecodable one included
    assert result.imported == 3 and result.duplicates == 1
    # every skipped line is kept with its file line number and reason
    rejects = store.query_df(
        "SELECT line, reason, detail FROM seg_import_reject WHERE file_id = ? ORDER BY line",
        [result.file_id],
    )
    wanted = [(n, r) for n, (_, r) in LINES.items() if r not in (None, "blank", "duplicate")]
    assert list(zip(rejects["line"], rejects["reason"], strict=True)) == [
        *wanted,
        (len(LINES) + 1, "bad_encoding"),
    ]
    details = dict(zip(rejects["line"], rejects["detail"], strict=True))
    assert details[6] == "last tuesday" and details[8].endswith(" bytes") and details[9] == "page"
    # a number or an object where Segment sends a string is skipped, naming the field
    assert details[17] == "userId = 42"
    assert details[18] == 'event = {"name":"Signed Up"}'
    assert details[19] == 'anonymousId = ["a","b"]'
    assert result.examples[0] == f"{path}:3: bad_json ({{not json)"
    events = store.query_df(
        "SELECT message_id, event, user_id, anonymous_id, ts, properties FROM seg_event ORDER BY 1"
    )
    assert events["message_id"].tolist() == ["m1", "m14", "m20"]
    # offsets are converted to UTC; nested fields of another type are left alone
    assert str(events.loc[1, "ts"]) == "2025-05-01 10:00:00"
    assert json.loads(events.loc[2, "properties"]) == {"revenue": 12.5}


def test_a_line_over_16_mb_is_skipped_and_the_rest_imported(store, tmp_path):
    path = tmp_path / "tracks.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.write(track("m1") + "\n")
        out.write(track("m2", properties={"blob": "x" * (17 * 1024 * 1024)}) + "\n")
        out.write(track("m3") + "\n")
    result = import_segment_export(store, path, "tracks")
    assert result.imported == 2 and result.skipped == {"oversize_message": 1}
    assert result.examples[0].startswith(f"{path}:2: oversize_message (17")


def test_a_file_is_imported_once_and_overlapping_exports_are_deduplicated(store, tmp_path):
    first = tmp_path / "day1.jsonl.gz"
    with gzip.open(first, "wt") as out:
        out.write("\n".join(track(f"m{i}") for i in range(10)) + "\n")
    assert import_segment_export(store, first, "tracks").imported == 10
    again = import_segment_export(store, first, "tracks")
    assert again.already_imported and again.imported == 0
    overlap = tmp_path / "day2.jsonl"
    overlap.write_text("\n".join(track(f"m{i}") for i in range(5, 15)) + "\n")
    second = import_segment_export(store, overlap, "tracks")
    assert (second.imported, second.duplicates) == (5, 5)
    forced = import_segment_export(store, overlap, "tracks", force=True)
    assert (forced.imported, forced.duplicates) == (5, 5)
    assert store.query_df("SELECT count(*) AS n FROM seg_event")["n"][0] == 15


def test_id_graph_rows_of_unknown_identity_types_are_skipped(store, tmp_path):
    rows = [
        {
            "canonical_segment_id": "p1",
            "external_id_type": "email",
            "external_id_value": " Ann@X.com ",
        },
        {
            "canonical_segment_id": "p1",
            "external_id_type": "anonymous_id",
            "external_id_value": "a1",
        },
        {"canonical_segment_id": "p1", "external_id_type": "fax_number", "external_id_value": "1"},
        {
            "canonical_segment_id": "p1",
            "external_id_type": "salesforce_id",
            "external_id_value": "00Q1",
        },
        {"canonical_segment_id": "p1", "segment_id": "p9"},  # a merge of profile p9 into p1
        {"segment_id": "p2", "external_id_type": "user_id", "external_id_value": "u2"},
        {"canonical_segment_id": "p3", "external_id_type": "email"},
        {
            "canonical_segment_id": "p1",
            "external_id_type": "email",
            "external_id_value": "ann@x.com",
        },
    ]
    path = tmp_path / "id_graph.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = import_segment_export(
        store, path, "id_graph", id_types=DEFAULT_ID_TYPES | {"salesforce_id"}
    )
    assert result.skipped == {"missing_identity": 1, "unknown_identity_type": 1}
    assert result.examples == [
        f"{path}:3: unknown_identity_type (fax_number)",
        f"{path}:7: missing_identity",
    ]
    assert (result.imported, result.duplicates) == (5, 1)  # the same email twice, normalised
    ids = store.query_df("SELECT profile_id, id_type, id_value FROM seg_external_id ORDER BY ALL")
    assert list(ids.itertuples(index=False, name=None)) == [
        ("p1", "anonymous_id", "a1"),
        ("p1", "email", "ann@x.com"),
        ("p1", "salesforce_id", "00Q1"),
        ("p1", "segment_id", "p9"),
        ("p2", "user_id", "u2"),
    ]


def test_identifies_keep_the_normalised_email_and_traits(store, tmp_path):
    path = tmp_path / "identifies.jsonl"
    path.write_text(
        json.dumps(
            {
                "type": "identify",
                "userId": "u1",
                "anonymousId": "a1",
                "timestamp": "2025-05-01T10:00:00Z",
                "messageId": "i1",
                "traits": {"email": "  Ann@Example.COM", "plan": "pro"},
            }
        )
        + "\n"
        + json.dumps({"type": "track", "event": "x", "userId": "u", "timestamp": "2025-05-01"})
        + "\n"
    )
    result = import_segment_export(store, path, "identifies")
    assert result.imported == 1 and result.skipped == {"other_type": 1}
    row = store.query_df("SELECT user_id, anonymous_id, email, traits FROM seg_identify")
    assert row["email"][0] == "ann@example.com"
    assert json.loads(row["traits"][0])["plan"] == "pro"


def test_parquet_exports_in_the_warehouse_shape(store, tmp_path):
    frame = pd.DataFrame(
        {
            "id": ["w1", "w2", "w3"],
            "user_id": ["u1", None, None],
            "anonymous_id": [None, "a2", None],
            "event": ["Order Completed", "Order Completed", "Order Completed"],
            "timestamp": pd.to_datetime(["2025-05-01 10:00:00", None, "2025-05-02 11:00:00"]),
            "revenue": [120.5, 10.0, 3.0],
        }
    )
    path = tmp_path / "tracks.parquet"
    frame.to_parquet(path)
    result = import_segment_export(store, path, "tracks")
    assert result.imported == 1
    assert result.skipped == {"missing_identity": 1, "missing_timestamp": 1}
    assert result.examples == [f"{path}:2: missing_timestamp", f"{path}:3: missing_identity"]
    row = store.query_df("SELECT message_id, ts, properties FROM seg_event")
    assert row["message_id"][0] == "w1" and str(row["ts"][0]) == "2025-05-01 10:00:00"
    # warehouse tables flatten properties into columns: the row is kept as the properties
    assert json.loads(row["properties"][0])["revenue"] == 120.5


def test_unreadable_files_are_one_clear_error(store, tmp_path):
    broken = tmp_path / "tracks.jsonl.gz"
    broken.write_bytes(b"this is not gzip")
    with pytest.raises(ConfigError, match="cannot read the file") as info:
        import_segment_export(store, broken, "tracks")
    assert str(broken) in str(info.value)
    other = tmp_path / "x.csv"
    other.write_text("a\n")
    with pytest.raises(ConfigError, match="unknown file type"):
        import_segment_export(store, other, "tracks")
    with pytest.raises(ConfigError, match="unknown Segment export kind"):
        import_segment_export(store, broken, "pages")
