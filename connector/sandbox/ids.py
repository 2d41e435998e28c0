"""Salesforce record ids: 15-character case-sensitive ids plus the 3-character checksum suffix.

A Salesforce id is ``KKK PP R SSSSSSSSS`` (key prefix, pod, reserved digit, base-62 sequence). The
18-character form appends one character per 5-character chunk that encodes which characters of
the chunk are upper case, so the id survives case-insensitive systems
(https://help.salesforce.com/s/articleView?id=000385585&type=1).

The sandbox numbers records per key prefix with a base-62 sequence written in ASCII order
(``0-9A-Za-z``), so sorting ids as text sorts them by creation sequence, as in a real org.
"""

from __future__ import annotations

import re

import numpy as np

POD = "5e"
"""Instance ("pod") characters baked into every sandbox id."""

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
SEQUENCE_DIGITS = 9
_ID_RE = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?")
_BASE62_BYTES = np.frombuffer(BASE62.encode(), dtype=np.uint8)
_CHECKSUM_BYTES = np.frombuffer(CHECKSUM_ALPHABET.encode(), dtype=np.uint8)


def checksum(id15: str) -> str:
    """Compute the 3-character case-insensitivity suffix of a 15-character id.

    Args:
        id15: The case-sensitive 15-character id.

    Returns:
        The three suffix characters.
    """
    suffix = []
    for chunk in range(3):
        bits = 0
        for position, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix.append(CHECKSUM_ALPHABET[bits])
    return "".join(suffix)


def make_id(key_prefix: str, sequence: int) -> str:
    """Build the 18-character id of record number ``sequence`` of an object.

    Args:
        key_prefix: The object's 3-character key prefix (``00Q`` for Lead).
        sequence: A non-negative record number, unique per key prefix.

    Returns:
        The 18-character id.
    """
    digits = []
    for _ in range(SEQUENCE_DIGITS):
        sequence, digit = divmod(sequence, 62)
        digits.append(BASE62[digit])
    if sequence:
        raise ValueError("id sequence overflow")
    id15 = f"{key_prefix}{POD}0{''.join(reversed(digits))}"
    return id15 + checksum(id15)


def make_ids(key_prefix: str, start: int, count: int) -> list[str]:
    """Build ``count`` consecutive 18-character ids, vectorised for millions of records.

    Args:
        key_prefix: The object's 3-character key prefix.
        start: Sequence number of the first id.
        count: How many ids to build.

    Returns:
        The ids, in sequence order.
    """
    if count <= 0:
        return []
    return make_id_array(key_prefix, start, count).astype(str).tolist()


def make_id_array(key_prefix: str, start: int, count: int) -> np.ndarray:
    """The ids of :func:`make_ids` as an ``S18`` array (18 bytes an id, not a str object each).

    Args:
        key_prefix: The object's 3-character key prefix.
        start: Sequence number of the first id.
        count: How many ids to build.

    Returns:
        The ids as ASCII bytes, in sequence order (``.astype(str)`` gives the str ids).
    """
    count = max(count, 0)
    sequences = np.arange(start, start + count, dtype=np.int64)
    chars = np.empty((count, 18), dtype=np.uint8)
    head = np.frombuffer(f"{key_prefix}{POD}0".encode(), dtype=np.uint8)
    chars[:, :6] = head
    for column in range(14, 5, -1):
        chars[:, column] = _BASE62_BYTES[sequences % 62]
        sequences //= 62
    if sequences.any():
        raise ValueError("id sequence overflow")
    upper = (chars[:, :15] >= ord("A")) & (chars[:, :15] <= ord("Z"))
    weights = np.array([1, 2, 4, 8, 16], dtype=np.uint8)
    for chunk in range(3):
        bits = (upper[:, chunk * 5 : chunk * 5 + 5] * weights).sum(axis=1)
        chars[:, 15 + chunk] = _CHECKSUM_BYTES[bits]
    return chars.view("S18").ravel()


def normalize_id(value: str) -> str | None:
    """Return the 18-character form of a 15- or 18-character id, or None when it is malformed.

    An 18-character id is accepted in any letter case when its suffix matches (Salesforce accepts
    case-insensitive 18-character ids); the canonical spelling is returned.

    Args:
        value: A candidate id.

    Returns:
        The canonical 18-character id, or None.
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        return None
    if len(value) == 15:
        return value + checksum(value)
    suffix = value[15:].upper()
    id15 = value[:15]
    if checksum(id15) == suffix:
        return id15 + suffix
    # The suffix says which characters were upper case: rebuild the case-sensitive id from it.
    restored = []
    for chunk in range(3):
        bits = CHECKSUM_ALPHABET.find(suffix[chunk])
        if bits < 0:
            return None
        for position, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            restored.append(char.upper() if bits & (1 << position) else char.lower())
    candidate = "".join(restored)
    if checksum(candidate) != suffix:
        return None
    return candidate + suffix


def key_prefix_of(record_id: str) -> str:
    """Return the key prefix (first three characters) of an id.

    Args:
        record_id: A 15- or 18-character id.

    Returns:
        The key prefix.
    """
    return record_id[:3]
