"""The benchmark catalog behind `reasoner list`: what can be evaluated, on how much data, under
which licence. Counts come from the manifests, so listing never reads a data file."""

from __future__ import annotations

from typing import Any

from reasoner.runner.benchmarks import available_benchmarks, load_benchmark
from reasoner.runner.datasets import load_manifest

_COLUMNS = ("name", "dataset", "split", "count", "verifier", "licence", "notes")


def catalog_rows() -> list[dict[str, Any]]:
    rows = []
    for name in available_benchmarks():
        spec = load_benchmark(name)
        manifest = load_manifest(spec.dataset)
        split = manifest.splits.get(spec.split)
        rows.append(
            {
                "name": spec.name,
                "dataset": spec.dataset,
                "split": spec.split,
                "count": split.count if split is not None else None,
                "verifier": spec.verifier,
                "licence": manifest.license,
                "non_commercial": manifest.non_commercial,
                "notes": manifest.license_note,
            }
        )
    return rows


def format_catalog(rows: list[dict[str, Any]]) -> str:
    """One aligned line per benchmark; non-commercial data is marked so it is not missed."""
    cells = [[_cell(row, column) for column in _COLUMNS] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(_COLUMNS)]
    lines = [_line(list(_COLUMNS), widths)] + [_line(r, widths) for r in cells]
    return "\n".join(lines)


def _cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column == "licence" and row.get("non_commercial"):
        return f"{value} [NON-COMMERCIAL]"
    return "?" if value is None else str(value)


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
