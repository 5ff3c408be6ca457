"""Accuracy with intervals, maj@k and unbiased pass@k, per-category breakdowns and compute,
computed from results rows alone so that a resumed run and an uninterrupted one summarise
identically."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from reasoner.strategies.voting import majority_cluster

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


def maj_at_k_correct(clusters: Sequence[int], sample_correct: Sequence[bool], k: int) -> bool:
    winner = majority_cluster(clusters, k)
    if winner is None:
        return False
    return sample_correct[list(clusters).index(winner)]


def k_values(n: int) -> list[int]:
    ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
    return sorted({*ks, n})


MISSING_CATEGORY = "(missing)"


def accuracy_counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Verifier errors are left out of the denominator: a crashed checker says nothing about the
    answer, so counting it as wrong would blame the model for the verifier."""
    total = len(rows)
    statuses = [row["verdict"]["status"] for row in rows]
    correct = statuses.count("correct")
    errors = statuses.count("error")
    scored = total - errors
    low, high = wilson_interval(correct, scored)
    return {
        "problems": total,
        "scored": scored,
        "correct": correct,
        "accuracy": correct / scored if scored else None,
        "accuracy_ci95": [low, high],
        "verifier_errors": errors,
        "verifier_error_rate": errors / total if total else 0.0,
    }


def category_key(value: Any) -> tuple[int, float, str]:
    """Sort order for category values: numbers (MATH levels) numerically, then text."""
    if isinstance(value, bool):
        return (1, 0.0, str(value))
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def breakdown(rows: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Accuracy per value of one metadata key. Rows without the key are grouped under
    MISSING_CATEGORY so that the per-value counts always add up to the run's."""
    groups: dict[str, list[dict[str, Any]]] = {}
    raw: dict[str, Any] = {}
    for row in rows:
        metadata = row["problem"].get("metadata") or {}
        value = metadata.get(key)
        name = MISSING_CATEGORY if value is None else str(value)
        groups.setdefault(name, []).append(row)
        raw.setdefault(name, value)
    order = sorted(groups, key=lambda name: (name == MISSING_CATEGORY, category_key(raw[name])))
    return {name: accuracy_counts(groups[name]) for name in order}


def compute_tokens(
    prompt: int, prompt_cached: int, completion: int, problems: int
) -> dict[str, float]:
    """Tokens the engine had to process: generated plus prefilled (prompt tokens not served from
    the prefix cache). Strategies are compared at equal compute on this number, since
    self-consistency and search pay in both prefill and decode."""
    prefilled = prompt - prompt_cached
    total = prefilled + completion
    return {
        "generated": completion,
        "prefilled": prefilled,
        "total": total,
        "per_problem": total / problems if problems else 0.0,
    }


#: what the summary's `at_k_denominator` says, so a reader of summary.json needs no docs
AT_K_DENOMINATOR = (
    "per problem over its own candidates (Trace.candidates; every sample when absent); "
    "problems whose final verdict is a verifier error are left out, as in accuracy; "
    "a candidate whose own verdict is an error counts as not correct (candidate_errors); "
    "pass@k and maj@k at k average over the problems with at least k candidates (at_k_problems)"
)


def candidate_outcomes(row: dict[str, Any]) -> tuple[list[bool], list[int], int]:
    """The candidates a problem's pass@k / maj@k are computed over, as (correct, answer class)
    per candidate in generation order, plus how many of them have an `error` verdict.

    A strategy names its candidates in `candidates` (indices into the samples: every verdict
    of every step, in order); rows without the field count every sample."""
    verdicts = [v for step in row["steps"] for v in step["verdicts"]]
    clusters = list(row.get("clusters") or [])
    clusters += [-1] * (len(verdicts) - len(clusters))  # a sample with no class never votes
    chosen = row.get("candidates")
    indices = range(len(verdicts)) if chosen is None else chosen
    for index in indices:
        if not 0 <= index < len(verdicts):
            raise ValueError(
                f"problem {row['problem'].get('id')!r}: candidate {index} is not one of its "
                f"{len(verdicts)} samples"
            )
    correct = [verdicts[i]["status"] == "correct" for i in indices]
    errors = sum(verdicts[i]["status"] == "error" for i in indices)
    return correct, [clusters[i] for i in indices], errors


def at_k_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """pass@k (Chen et al., 2021, unbiased) and maj@k, each problem with its own n.

    The unbiased estimator is defined only for k <= n, so pass@k and maj@k at k average over
    the problems with at least k candidates, and `at_k_problems` says how many those are. The
    denominator leaves out problems with a verifier error, exactly as accuracy does (a crashed
    checker says nothing about the model); maj@k votes over a problem's first k candidates.
    Empty when no problem has more than one candidate (pass@1 would repeat accuracy)."""
    scored = [row for row in rows if row["verdict"]["status"] != "error"]
    outcomes = [candidate_outcomes(row) for row in scored]
    sizes = [len(correct) for correct, _, _ in outcomes]
    largest = max(sizes, default=0)
    if largest <= 1:
        return {}
    pass_k: dict[str, float] = {}
    maj_k: dict[str, float] = {}
    counts: dict[str, int] = {}
    for k in range(1, largest + 1):
        eligible = [o for o in outcomes if len(o[0]) >= k]
        counts[str(k)] = len(eligible)
        pass_k[str(k)] = sum(pass_at_k(len(c), sum(c), k) for c, _, _ in eligible) / len(eligible)
        if k in k_values(largest):
            maj_k[str(k)] = sum(maj_at_k_correct(cl, c, k) for c, cl, _ in eligible) / len(eligible)
    return {
        "samples_per_problem": largest,
        "samples_per_problem_min": min(sizes),
        "candidate_errors": sum(errors for _, _, errors in outcomes),
        "pass@k": pass_k,
        "maj@k": maj_k,
        "at_k_problems": counts,
        "at_k_denominator": AT_K_DENOMINATOR,
    }


def summarize(
    rows: Sequence[dict[str, Any]], *, breakdown_keys: Sequence[str] = ()
) -> dict[str, Any]:
    """Metrics over results rows (see Trace.to_dict); `breakdown_keys` names problem metadata
    keys (level, subject, ...) to report accuracy per value of."""
    total = len(rows)
    summary: dict[str, Any] = {
        **accuracy_counts(rows),
        "no_answer": sum(1 for row in rows if row["prediction"] is None),
        **at_k_metrics(rows),
    }
    prompt_tokens = sum(row["usage"]["prompt_tokens"] for row in rows)
    completion_tokens = sum(row["usage"]["completion_tokens"] for row in rows)
    summary["tokens"] = {
        "prompt": prompt_tokens,
        "prompt_cached": sum(row["usage"].get("cached_prompt_tokens", 0) for row in rows),
        "completion": completion_tokens,
        "prompt_per_problem": prompt_tokens / total if total else 0.0,
        "completion_per_problem": completion_tokens / total if total else 0.0,
    }
    summary["compute"] = compute_tokens(
        prompt_tokens, summary["tokens"]["prompt_cached"], completion_tokens, total
    )
    if breakdown_keys:
        summary["breakdown"] = {key: breakdown(rows, key) for key in breakdown_keys}
    answered_by = [row["verdict"].get("details", {}).get("answered_by", "") for row in rows]
    if any(by != "" for by in answered_by):  # execute-and-vote: program vs CoT fallback
        summary["answered_by"] = {
            "program": answered_by.count("program"),
            "fallback": answered_by.count("fallback"),
            "fallback_correct": sum(
                by == "fallback" and row["verdict"]["status"] == "correct"
                for by, row in zip(answered_by, rows, strict=True)
            ),
        }
    summary["engine_requests"] = sum(row["usage"]["engine_calls"] for row in rows)
    summary["verifier_calls"] = sum(row["usage"]["verifier_calls"] for row in rows)
    return summary
