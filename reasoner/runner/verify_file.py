"""`reasoner verify FILE`: verdicts for a JSONL file of candidate answers, and its summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.errors import DatasetError
from reasoner.runner.metrics import wilson_interval
from reasoner.types import Completion, Problem
from reasoner.verifiers.base import Verifier


@dataclass(frozen=True)
class CandidateFields:
    completion: str = "completion"
    answer: str = "answer"
    question: str = "question"
    id: str = "id"


def read_candidates(
    path: Path, fields: CandidateFields, skip_bad: bool
) -> tuple[list[tuple[Problem, Completion]], list[str]]:
    if not path.is_file():
        raise DatasetError(f"candidates file {path} does not exist")
    pairs: list[tuple[Problem, Completion]] = []
    bad: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("expected a JSON object")
            missing = [f for f in (fields.completion, fields.answer) if f not in row]
            if missing:
                raise ValueError(f"missing field(s) {missing}; the row has {sorted(row)}")
        except ValueError as exc:  # JSONDecodeError is a ValueError
            reason = f"{path}:{lineno}: {exc}"
            if not skip_bad:
                raise DatasetError(
                    reason + " (pass --skip-bad to skip and count such rows)"
                ) from None
            bad.append(reason)
            continue
        metadata = {k: v for k, v in row.items() if k not in (fields.completion, fields.answer)}
        problem = Problem(
            id=str(row.get(fields.id, lineno)),
            question=str(row.get(fields.question, "")),
            answer=None if row[fields.answer] is None else str(row[fields.answer]),
            metadata=metadata,
        )
        pairs.append((problem, Completion(str(row[fields.completion]), "stop", 0, 0)))
    return pairs, bad


def verify_file(
    path: Path, verifier: Verifier, out: Path, fields: CandidateFields, skip_bad: bool = False
) -> dict[str, Any]:
    pairs, bad = read_candidates(path, fields, skip_bad)
    verdicts = verifier.verify_batch(pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for (problem, _), verdict in zip(pairs, verdicts, strict=True):
            f.write(json.dumps({"id": problem.id, **verdict.to_dict()}, ensure_ascii=False) + "\n")
    counts = {s: sum(v.status == s for v in verdicts) for s in ("correct", "incorrect", "error")}
    scored = counts["correct"] + counts["incorrect"]
    summary = {
        "input": str(path),
        "verifier": verifier.name,
        "candidates": len(pairs),
        **counts,
        "accuracy": counts["correct"] / scored if scored else None,
        "accuracy_ci95": list(wilson_interval(counts["correct"], scored)),
        "bad_rows_skipped": len(bad),
        "verdicts": str(out),
    }
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
