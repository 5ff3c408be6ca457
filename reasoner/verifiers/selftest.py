"""Regression suites of hand-checked verdicts (`verifiers/regression/<verifier>.jsonl`).

Each case is a gold answer, a completion and the verdict a careful human gives. A case the
verifier is known to get wrong carries `known_failure` with the reason: it is reported, so the
suite documents the verifier's blind spots instead of hiding them, but it does not fail the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoner.errors import ConfigError
from reasoner.resources import asset_dir
from reasoner.types import Completion, Problem
from reasoner.verifiers.base import Verifier


@dataclass
class SuiteReport:
    suite: str
    total: int = 0
    passed: int = 0
    known_failures: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # unexpected verdicts
    fixed: list[dict[str, Any]] = field(default_factory=list)  # known failures that now pass

    @property
    def ok(self) -> bool:
        return not self.failures


def suite_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted((asset_dir("verifiers") / "regression").glob("*.jsonl"))}


def load_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
            for key in ("id", "gold", "completion", "expected"):
                case[key]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ConfigError(f"{path}:{lineno}: bad regression case ({exc})") from None
        cases.append(case)
    return cases


def run_suite(verifier: Verifier, path: Path) -> SuiteReport:
    cases = load_cases(path)
    pairs = [
        (
            Problem(
                id=c["id"],
                question=c.get("question", ""),
                answer=c["gold"],
                metadata=c.get("metadata", {}),
            ),
            Completion(c["completion"], "stop", 0, 0),
        )
        for c in cases
    ]
    report = SuiteReport(suite=path.stem, total=len(cases))
    for case, verdict in zip(cases, verifier.verify_batch(pairs), strict=True):
        got = {
            "id": case["id"],
            "expected": case["expected"],
            "got": verdict.status,
            "feedback": verdict.feedback,
            "gold": case["gold"],
        }
        if verdict.status == case["expected"]:
            report.passed += 1
            if case.get("known_failure"):
                report.fixed.append(got)
        elif case.get("known_failure"):
            report.known_failures.append({**got, "reason": case["known_failure"]})
        else:
            report.failures.append(got)
    return report
