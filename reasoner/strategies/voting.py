"""Majority voting over answer classes: the vote every sampling strategy and maj@k share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from reasoner.types import Problem, Verdict
from reasoner.verifiers.base import Verifier


def majority_cluster(clusters: Sequence[int], k: int) -> int | None:
    """The most common answer class among the first k samples (-1 = no answer, never voted);
    ties go to the class seen first, so a vote is deterministic given generation order."""
    votes = [c for c in clusters[:k] if c >= 0]
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    return next(c for c in votes if counts[c] == best)


def cluster_answers(verifier: Verifier, problem: Problem, verdicts: Sequence[Verdict]) -> list[int]:
    """The answer-equivalence class of each sample (-1 where no answer was found), found by
    comparing each answer with one representative of every class seen so far."""
    representatives: list[str] = []
    clusters: list[int] = []
    for verdict in verdicts:
        answer = verdict.answer
        if answer is None:
            clusters.append(-1)
            continue
        for index, representative in enumerate(representatives):
            if answer == representative or verifier.equivalent(problem, answer, representative):
                clusters.append(index)
                break
        else:
            representatives.append(answer)
            clusters.append(len(representatives) - 1)
    return clusters
