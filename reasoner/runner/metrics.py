"""Accuracy with intervals, maj@k and unbiased pass@k, computed from results rows alone so that
a resumed run and an uninterrupted one summarise identically."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

Z_95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval: unlike the normal approximation it stays inside [0, 1] and
    is honest at 0/n and n/n, which small eval slices hit often."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021): 1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn
    without replacement include a correct one."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_cluster(clusters: Sequence[int], k: int) -> int | None:
    """The most common answer class among the first k samples (-1 = no answer, never voted);
    ties go to the class seen first."""
    votes = [c for c in clusters[:k] if c >= 0]
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    return next(c for c in votes if counts[c] == best)


def maj_at_k_correct(clusters: Sequence[int], sample_correct: Sequence[bool], k: int) -> bool:
    winner = majority_cluster(clusters, k)
    if winner is None:
        return False
    return sample_correct[list(clusters).index(winner)]


def k_values(n: int) -> list[int]:
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return sorted({*ks, n})


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over results rows (see Trace.to_dict)."""
    total = len(rows)
    statuses = [row["verdict"]["status"] for row in rows]
    correct = statuses.count("correct")
    errors = statuses.count("error")
    scored = total - errors
    low, high = wilson_interval(correct, scored)
    summary: dict[str, Any] = {
        "problems": total,
        "scored": scored,
        "correct": correct,
        "accuracy": correct / scored if scored else None,
        "accuracy_ci95": [low, high],
        "verifier_errors": errors,
        "no_answer": sum(1 for row in rows if row["prediction"] is None),
    }
    sample_verdicts = [[v for step in row["steps"] for v in step["verdicts"]] for row in rows]
    n = min((len(v) for v in sample_verdicts), default=0)
    if n > 1:
        summary["samples_per_problem"] = n
        sample_errors = sum(1 for vs in sample_verdicts for v in vs if v["status"] == "error")
        summary["sample_verifier_errors"] = sample_errors
        summary["pass@k"] = {}
        summary["maj@k"] = {}
        for k in range(1, n + 1):
            values = [
                pass_at_k(n, sum(v["status"] == "correct" for v in vs[:n]), k)
                for vs in sample_verdicts
            ]
            summary["pass@k"][str(k)] = sum(values) / total
        for k in k_values(n):
            hits = sum(
                maj_at_k_correct(row["clusters"], [v["status"] == "correct" for v in vs], k)
                for row, vs in zip(rows, sample_verdicts, strict=True)
            )
            summary["maj@k"][str(k)] = hits / total
    prompt_tokens = sum(row["usage"]["prompt_tokens"] for row in rows)
    completion_tokens = sum(row["usage"]["completion_tokens"] for row in rows)
    summary["tokens"] = {
        "prompt": prompt_tokens,
        "prompt_cached": sum(row["usage"].get("cached_prompt_tokens", 0) for row in rows),
        "completion": completion_tokens,
        "prompt_per_problem": prompt_tokens / total if total else 0.0,
        "completion_per_problem": completion_tokens / total if total else 0.0,
    }
    summary["engine_requests"] = sum(row["usage"]["engine_calls"] for row in rows)
    summary["verifier_calls"] = sum(row["usage"]["verifier_calls"] for row in rows)
    return summary
