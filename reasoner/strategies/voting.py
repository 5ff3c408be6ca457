"""Majority voting over answer classes: the vote every sampling strategy and maj@k share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def majority_cluster(clusters: Sequence[int], k: int) -> int | None:
    """The most common answer class among the first k samples (-1 = no answer, never voted);
    ties go to the class seen first, so a vote is deterministic given generation order."""
    votes = [c for c in clusters[:k] if c >= 0]
    if not votes:
        return None
    counts = Counter(votes)
    best = max(counts.values())
    return next(c for c in votes if counts[c] == best)
