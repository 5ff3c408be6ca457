from __future__ import annotations

import math

import pytest

from reasoner.runner.metrics import (
    k_values,
    maj_at_k_correct,
    majority_cluster,
    pass_at_k,
    summarize,
    wilson_interval,
)


def test_wilson_interval_matches_hand_computation() -> None:
    # 8 of 10 at z = 1.96: centre (0.8 + z²/20) / (1 + z²/10)
    low, high = wilson_interval(8, 10)
    z = 1.959963984540054
    denom = 1 + z * z / 10
    centre = (0.8 + z * z / 20) / denom
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / denom
    assert low == pytest.approx(centre - half)
    assert high == pytest.approx(centre + half)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def test_wilson_interval_edges_stay_in_unit_range() -> None:
    assert wilson_interval(0, 5)[0] == 0.0
    assert wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (8, 0, 1, 0.0),
        (8, 8, 4, 1.0),
        (8, 2, 1, 2 / 8),
        (8, 2, 2, 1 - (6 * 5) / (8 * 7)),  # 1 - C(6,2)/C(8,2) = 1 - 15/28
        (5, 1, 3, 1 - 4 / 10),  # 1 - C(4,3)/C(5,3)
        (4, 3, 2, 1.0),  # n - c < k
    ],
)
def test_pass_at_k_unbiased_estimator(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_k_above_n() -> None:
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_majority_ignores_missing_answers_and_breaks_ties_by_first_seen() -> None:
    assert majority_cluster([-1, 1, 0, 0, 1], 5) == 1  # 1 and 0 tie; 1 seen first
    assert majority_cluster([-1, -1], 2) is None
    assert majority_cluster([2, 0, 0], 1) == 2
    assert maj_at_k_correct([0, 1, 1], [True, False, False], 3) is False
    assert maj_at_k_correct([0, 1, 1], [True, False, False], 1) is True


def test_k_values() -> None:
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(6) == [1, 2, 4, 6]
    assert k_values(1) == [1]


def _row(
    status: str,
    sample_statuses: list[str],
    clusters: list[int],
    candidates: list[int] | None = None,
    steps: list[int] | None = None,
) -> dict[str, object]:
    """A results row; `steps` splits the samples into engine requests (one by default)."""
    sizes = steps or [len(sample_statuses)]
    verdicts = [{"status": s} for s in sample_statuses]
    split, start = [], 0
    for size in sizes:
        split.append({"verdicts": verdicts[start : start + size]})
        start += size
    row: dict[str, object] = {
        "problem": {"id": "x"},
        "prediction": None if status == "incorrect" and clusters == [-1] * len(clusters) else "1",
        "verdict": {"status": status},
        "clusters": clusters,
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "engine_calls": 1,
            "verifier_calls": 2,
        },
        "steps": split,
    }
    if candidates is not None:
        row["candidates"] = candidates
    return row


def test_summarize_leaves_verifier_errors_out_of_every_denominator() -> None:
    rows = [
        _row("correct", ["correct", "incorrect"], [0, 1]),
        _row("incorrect", ["incorrect", "error"], [0, 1]),
        _row("error", ["error", "correct"], [0, 1]),
    ]
    summary = summarize(rows)
    assert summary["problems"] == 3
    assert summary["scored"] == 2
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["verifier_errors"] == 1
    # the third problem is out, as in accuracy; the second's error sample counts as not correct
    assert summary["candidate_errors"] == 1
    assert summary["at_k_problems"] == {"1": 2, "2": 2}
    # pass@1: (1/2 + 0) / 2; pass@2: (1 + 0) / 2
    assert summary["pass@k"]["1"] == pytest.approx(1 / 4)
    assert summary["pass@k"]["2"] == pytest.approx(1 / 2)
    # maj@2: a 1-1 tie goes to the first sample's class: correct, incorrect -> 1/2
    assert summary["maj@k"]["2"] == pytest.approx(1 / 2)
    assert "verifier error" in summary["at_k_denominator"]
    assert summary["tokens"]["completion"] == 60


def test_pass_and_maj_at_k_use_each_problems_own_n() -> None:
    rows = [
        # n=2, c=1
        _row("correct", ["correct", "incorrect"], [0, 1]),
        # n=4, c=2; classes a a b b: maj@4 tie -> a (correct), maj@2 -> a
        _row("correct", ["correct", "correct", "incorrect", "incorrect"], [0, 0, 1, 1]),
        # n=3, c=1; classes b b a: maj@2 -> b (wrong), maj@3 -> b
        _row("incorrect", ["incorrect", "incorrect", "correct"], [1, 1, 0]),
    ]
    summary = summarize(rows)
    assert (summary["samples_per_problem"], summary["samples_per_problem_min"]) == (4, 2)
    assert summary["at_k_problems"] == {"1": 3, "2": 3, "3": 2, "4": 1}
    pass_k = summary["pass@k"]
    # pass@1 = mean(c/n) = (1/2 + 2/4 + 1/3) / 3
    assert pass_k["1"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
    # pass@2: 1 - C(n-c,2)/C(n,2): 1, 1 - 1/6, 1 - 1/3
    assert pass_k["2"] == pytest.approx((1 + 5 / 6 + 2 / 3) / 3)
    # pass@3 over the two problems with n >= 3: n=4,c=2 -> 1 (n-c < k); n=3,c=1 -> 1
    assert pass_k["3"] == pytest.approx(1.0)
    # pass@4 over the one problem with n = 4
    assert pass_k["4"] == pytest.approx(1.0)
    # maj@k at k = 1, 2, 4 (powers of two up to the largest n, and that n)
    assert set(summary["maj@k"]) == {"1", "2", "4"}
    assert summary["maj@k"]["1"] == pytest.approx(2 / 3)  # first samples: c, c, i
    assert summary["maj@k"]["2"] == pytest.approx(2 / 3)
    assert summary["maj@k"]["4"] == pytest.approx(1.0)


def test_declared_candidates_leave_other_samples_out() -> None:
    # execute-and-vote: a round-0 request of 3 programs, then two repairs that succeeded
    repaired = _row(
        "correct",
        ["error", "incorrect", "error", "correct", "correct"],
        [-1, 1, -1, 0, 0],
        candidates=[0, 1, 2],
        steps=[3, 1, 1],
    )
    # without the declaration the repairs would count: c=2 of n=5
    assert summarize([repaired])["pass@k"]["1"] == pytest.approx(0.0)
    summary = summarize([repaired])
    assert summary["samples_per_problem"] == 3
    assert summary["candidate_errors"] == 2
    assert summary["pass@k"]["3"] == 0.0
    assert summary["maj@k"]["2"] == 0.0  # class 1 (incorrect) is the only vote
    undeclared = {k: v for k, v in repaired.items() if k != "candidates"}
    assert summarize([undeclared])["pass@k"]["1"] == pytest.approx(2 / 5)


def test_one_candidate_per_problem_reports_no_at_k() -> None:
    # self-refine declares its final round: three rounds, one candidate
    rows = [_row("correct", ["incorrect", "incorrect", "correct"], [0, 0, 1], candidates=[2])]
    summary = summarize(rows)
    assert "pass@k" not in summary and "maj@k" not in summary


def test_a_candidate_outside_the_samples_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="candidate 5"):
        summarize([_row("correct", ["correct"], [0], candidates=[5])])


def _graded(status: str, level: object, prompt: int, cached: int, completion: int) -> dict:
    row = _row(status, [status], [0])
    metadata = {} if level is None else {"level": level, "subject": "Algebra"}
    row["problem"] = {"id": "x", "metadata": metadata}
    row["usage"] = {
        "prompt_tokens": prompt,
        "cached_prompt_tokens": cached,
        "completion_tokens": completion,
        "engine_calls": 1,
        "verifier_calls": 1,
    }
    return row


def test_summarize_breaks_accuracy_down_by_metadata_value() -> None:
    rows = [
        _graded("correct", 2, 10, 0, 5),
        _graded("incorrect", 10, 10, 0, 5),
        _graded("correct", 2, 10, 0, 5),
        _graded("error", 2, 10, 0, 5),
        _graded("correct", 1, 10, 0, 5),
        _graded("incorrect", None, 10, 0, 5),
    ]
    by_level = summarize(rows, breakdown_keys=["level"])["breakdown"]["level"]
    # numeric order (1, 2, 10, not "10" < "2"), rows without the key last
    assert list(by_level) == ["1", "2", "10", "(missing)"]
    two = by_level["2"]
    # 3 rows: 2 correct, 1 verifier error -> 2/2 scored; Wilson(2, 2) lower = 2 / (2 + z²)
    assert (two["problems"], two["scored"], two["correct"]) == (3, 2, 2)
    assert two["accuracy"] == 1.0
    assert two["accuracy_ci95"][0] == pytest.approx(2 / (2 + 1.959963984540054**2))
    assert two["accuracy_ci95"][1] == 1.0
    assert two["verifier_errors"] == 1
    assert two["verifier_error_rate"] == pytest.approx(1 / 3)
    assert by_level["10"]["accuracy"] == 0.0
    assert by_level["(missing)"]["problems"] == 1
    assert sum(v["problems"] for v in by_level.values()) == len(rows)
    subjects = summarize(rows, breakdown_keys=["subject"])["breakdown"]["subject"]
    assert {k: v["problems"] for k, v in subjects.items()} == {"Algebra": 5, "(missing)": 1}


def test_summarize_counts_compute_as_generated_plus_uncached_prompt() -> None:
    rows = [_graded("correct", 1, 100, 60, 30), _graded("error", 1, 50, 0, 20)]
    summary = summarize(rows)
    # prefilled = (100 - 60) + (50 - 0) = 90; generated = 50; total 140 over 2 problems
    assert summary["compute"] == {
        "generated": 50,
        "prefilled": 90,
        "total": 140,
        "per_problem": 70.0,
    }
    assert summary["verifier_error_rate"] == 0.5
    assert "breakdown" not in summary  # only when asked for


def test_summarize_of_no_rows_is_defined() -> None:
    summary = summarize([], breakdown_keys=["level"])
    assert summary["compute"]["per_problem"] == 0.0
    assert summary["verifier_error_rate"] == 0.0
    assert summary["breakdown"] == {"level": {}}
