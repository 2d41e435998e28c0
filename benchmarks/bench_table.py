"""The verdict and the plain-text table the benchmark scripts print."""

from __future__ import annotations


def verdict(ok: bool) -> str:
    """``OK`` when a target is met, ``MISSED`` otherwise."""
    return "OK" if ok else "MISSED"


def print_table(columns: list[str], rows: list[list[object]], *, align: str = "<") -> None:
    """Print rows under a header and a rule, columns padded to their widest cell.

    Args:
        columns: header cells.
        rows: one list of cells per row.
        align: ``<`` (left) or ``>`` (right), as in a format spec.
    """
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    line = "  ".join(f"{c:{align}{w}}" for c, w in zip(columns, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(f"{v!s:{align}{w}}" for v, w in zip(row, widths, strict=True)))
