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


def _row(status: str, sample_statuses: list[str], clusters: list[int]) -> dict[str, object]:
    return {
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
        "steps": [{"verdicts": [{"status": s} for s in sample_statuses]}],
    }


def test_summarize_counts_errors_apart_from_wrong_answers() -> None:
    rows = [
        _row("correct", ["correct", "incorrect"], [0, 1]),
        _row("incorrect", ["incorrect", "incorrect"], [0, 0]),
        _row("error", ["error", "correct"], [0, 1]),
    ]
    summary = summarize(rows)
    assert summary["problems"] == 3
    assert summary["scored"] == 2
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["verifier_errors"] == 1
    assert summary["sample_verifier_errors"] == 1
    # pass@1: (1/2 + 0 + 1/2) / 3; pass@2: (1 + 0 + 1) / 3
    assert summary["pass@k"]["1"] == pytest.approx(1 / 3)
    assert summary["pass@k"]["2"] == pytest.approx(2 / 3)
    # maj@2: ties go to the first sample's class: correct, incorrect, error(first) -> 1/3
    assert summary["maj@k"]["2"] == pytest.approx(1 / 3)
    assert summary["tokens"]["completion"] == 60
