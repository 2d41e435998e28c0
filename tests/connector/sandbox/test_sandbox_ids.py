"""18-character Salesforce ids."""

from __future__ import annotations

import pytest

from connector.sandbox.ids import checksum, make_id, make_ids, normalize_id


@pytest.mark.parametrize(
    ("id15", "id18"),
    [
        # Published examples of the 15 -> 18 conversion.
        ("001A0000006Vm9r", "001A0000006Vm9rIAC"),
        ("0015000000Gv7qJ", "0015000000Gv7qJAAR"),
        ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),
    ],
)
def test_checksum_matches_salesforce(id15, id18):
    assert id15 + checksum(id15) == id18
    assert normalize_id(id15) == id18
    assert normalize_id(id18.lower()) == id18
    assert normalize_id(id18.upper()) == id18


def test_vectorised_ids_match_scalar_ids_and_sort_in_sequence_order():
    ids = make_ids("00T", 1, 5000)
    assert ids[:3] == [make_id("00T", 1), make_id("00T", 2), make_id("00T", 3)]
    assert ids[3843] == make_id("00T", 3844)
    assert sorted(ids) == ids
    assert len(set(ids)) == len(ids)
    assert all(len(value) == 18 and value.startswith("00T5e0") for value in ids)


@pytest.mark.parametrize("value", ["", "abc", "00Q5e0000000001", "00Q5e0000000001EA", 42, "!" * 18])
def test_malformed_ids(value):
    if value == "00Q5e0000000001":
        assert normalize_id(value) is not None  # 15 characters is fine
    else:
        assert normalize_id(value) is None  # type: ignore[arg-type]
