"""Reading a run folder's results.jsonl: the one reader every command uses.

A run appends one JSON line per finished problem and fsyncs it, so the only damage a kill can
do is a last line cut short. The policy, the same for eval's resume, report, show, rescore,
merge, training data and the loops:

- a cut-off last line (no trailing newline, or not a JSON object) is skipped with a warning;
- an unreadable line before the last is not a kill's doing: it is a `RunFolderError` naming the
  file and line, because skipping it would silently drop a finished problem;
- readers never modify the file. Only the resume writer (`RunFolder.load_results`) moves a torn
  tail aside, to results.jsonl.torn, so its next append starts on a fresh line.

This module sits just above `reasoner.types`, so strategies, runner, training and loops can all
import it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.errors import RunFolderError
from reasoner.types import Trace

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"

Row = dict[str, Any]


@dataclass(frozen=True)
class ResultsScan:
    """What a read of results.jsonl found: the finished rows, the byte length they (and any
    blank lines between them) take, and the cut-off tail after them, if any."""

    path: Path
    rows: list[Row]
    good_bytes: int
    torn: bytes = b""


def scan_results(path: str | Path) -> ResultsScan:
    """Read a results.jsonl file without changing it (see the module docstring for the policy)."""
    path = Path(path)
    with open(path, "rb") as f:
        lines = f.readlines()
    rows: list[Row] = []
    good_bytes = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            good_bytes += len(raw)
            continue
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("the line has no end (cut short)")
            row = json.loads(raw)
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if number == len(lines):
                return ResultsScan(path, rows, good_bytes, torn=raw)
            raise RunFolderError(
                f"{path}:{number}: unreadable result line ({exc}); the {len(rows)} rows before "
                f"it and the {len(lines) - number} lines after it are finished work"
            ) from None
        rows.append(row)
        good_bytes += len(raw)
    return ResultsScan(path, rows, good_bytes)


def read_results(folder: str | Path, *, missing_ok: bool = False) -> list[Row]:
    """The finished rows (`Trace.to_dict()` dicts) of a run folder, in file order.

    A cut-off last line is skipped with a warning and left in the file; an unreadable line
    before it raises `RunFolderError`. A folder without results.jsonl is an error unless
    `missing_ok` (a run that has not finished a problem yet), which gives no rows."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        if missing_ok:
            return []
        raise RunFolderError(
            f"{folder}: not a run folder, or no problem finished yet ({RESULTS_FILE} is missing)"
        )
    scan = scan_results(path)
    if scan.torn:
        logger.warning(
            "%s: skipped a cut-off last line (%d bytes; a run killed mid-write, or one still "
            "writing); %d finished rows read",
            path,
            len(scan.torn),
            len(scan.rows),
        )
    return scan.rows


def read_traces(folder: str | Path, *, missing_ok: bool = False) -> list[Trace]:
    """`read_results` as typed Traces; a row that is not a Trace names its line."""
    traces = []
    for number, row in enumerate(read_results(folder, missing_ok=missing_ok), start=1):
        try:
            traces.append(Trace.from_dict(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFolderError(
                f"{Path(folder) / RESULTS_FILE}: row {number} is not a Trace ({exc!r})"
            ) from None
    return traces


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename, so a reader (or a killed
    writer) never sees a half-written file; flushed to disk before the rename, so a power cut
    leaves the old file or the new one, not an empty one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
