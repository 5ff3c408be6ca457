"""Agreement with other graders' published test cases (verifiers/suites/peer-math.jsonl).

Each case is a (gold, completion, expected verdict) taken from a public grader's own test file,
with its repository, path and commit. The math verifier must agree with the published verdict
on at least 95% of the cases, and on no source file less often than math-verify called directly
(`verify(parse("$" + gold + "$"), parse(completion))`). Cases marked `disputed` (a published
verdict that is wrong by the mathematics) are reported but not scored.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reasoner.resources import asset_dir
from reasoner.types import Completion, Problem
from reasoner.verifiers.math_answer import MathAnswerVerifier

SUITE = asset_dir("verifiers") / "suites" / "peer-math.jsonl"
REQUIRED_SOURCES = {"huggingface/Math-Verify", "NVIDIA/NeMo-Skills"}


def load_suite(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def math_verify_direct(gold: str, completion: str) -> str:
    """The baseline: math-verify with its defaults, the gold wrapped as inline math."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        same = verify(parse("$" + gold + "$"), parse(completion))
    except Exception:  # a crash is not a verdict either way
        return "error"
    return "correct" if same else "incorrect"


@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    return load_suite(SUITE)


@pytest.fixture(scope="module")
def verifier() -> Iterator[MathAnswerVerifier]:
    with MathAnswerVerifier(timeout_s=30.0, workers=2) as v:
        yield v


def test_every_case_names_its_source(cases: list[dict[str, Any]]) -> None:
    assert {c["source_repo"] for c in cases} >= REQUIRED_SOURCES
    for case in cases:
        assert re.fullmatch(r"[0-9a-f]{40}", case["source_commit"]), case["id"]
        assert case["source_path"].startswith("tests/"), case["id"]
        assert case["expected"] in ("correct", "incorrect"), case["id"]
    assert len({c["id"] for c in cases}) == len(cases)


def agreement_table(
    cases: list[dict[str, Any]], ours: list[str], direct: list[str]
) -> dict[str, dict[str, float]]:
    """Per source file, per repository and overall: cases scored, and the share each grader
    agrees with."""
    total: Counter[str] = Counter()
    agree_ours: Counter[str] = Counter()
    agree_direct: Counter[str] = Counter()
    for case, mine, theirs in zip(cases, ours, direct, strict=True):
        if case.get("disputed"):
            continue
        repo = case["source_repo"]
        for source in (f"{repo}:{case['source_path']}", repo, "overall"):
            total[source] += 1
            agree_ours[source] += mine == case["expected"]
            agree_direct[source] += theirs == case["expected"]
    return {
        source: {
            "cases": n,
            "reasoner": agree_ours[source] / n,
            "math_verify_direct": agree_direct[source] / n,
        }
        for source, n in total.items()
    }


def test_agreement_with_published_verdicts(
    cases: list[dict[str, Any]], verifier: MathAnswerVerifier
) -> None:
    pairs = [
        (Problem(c["id"], "", c["gold"]), Completion(c["completion"], "stop", 0, 0)) for c in cases
    ]
    ours = [v.status for v in verifier.verify_batch(pairs)]
    direct = [math_verify_direct(c["gold"], c["completion"]) for c in cases]
    table = agreement_table(cases, ours, direct)
    print(json.dumps(table, indent=2))  # the figures docs/math-answers.md records (pytest -s)
    for case, mine in zip(cases, ours, strict=True):
        if mine != case["expected"]:
            print(f"disagrees: {case['id']} expected {case['expected']}, got {mine}")
    assert table["overall"]["reasoner"] >= 0.95
    for source, row in table.items():
        assert row["reasoner"] >= row["math_verify_direct"], source


def test_agreement_table_counts_per_source() -> None:
    cases = [
        {"source_repo": "a/b", "source_path": "t.py", "expected": "correct"},
        {"source_repo": "a/b", "source_path": "t.py", "expected": "incorrect"},
        {"source_repo": "c/d", "source_path": "u.py", "expected": "correct", "disputed": "x"},
    ]
    table = agreement_table(cases, ["correct", "correct", "error"], ["correct", "incorrect", "x"])
    assert table["a/b:t.py"] == {"cases": 2, "reasoner": 0.5, "math_verify_direct": 1.0}
    assert "c/d:u.py" not in table
    assert table["a/b"] == table["a/b:t.py"]
    assert table["overall"]["cases"] == 2
