"""Best-of-N: n samples per problem, the pick made by a scorer that never sees the gold answer.

The scorer is any verifier (a reward model, an LLM judge, unit tests) called on `blind(problem)`.
`select: max` takes the highest-scored sample; `select: weighted-majority` sums the scores of
each answer-equivalence class and takes the heaviest class (search-and-learn's weighted
best-of-N), which is self-consistency with votes weighted by the scorer. The run's verifier
grades every sample (for pass@k) and decides the verdict of the pick, but never the pick.

All problems' samples come from one engine call. Scoring waits until generation has finished:
an LLM judge is itself an engine call and cannot run while the engine streams the samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoner.errors import ConfigError
from reasoner.strategies.base import StrategyConfig, require_blind
from reasoner.strategies.n_sample import NSampleStrategy, Pick, Samples
from reasoner.strategies.voting import majority_cluster
from reasoner.types import Verdict
from reasoner.verifiers.base import Verifier

Select = Literal["max", "weighted-majority"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    select: Select = "max"
    #: problems per scorer call (None: all in one); smaller batches reach disk sooner
    scorer_batch: int | None = Field(default=None, ge=1)


def scorer_score(verdict: Verdict) -> float | None:
    """A scorer's `error` is no score at all: it ranks below every scored sample rather than
    tying with a sample the scorer really gave 0."""
    return None if verdict.status == "error" else verdict.score


def pick_max(scores: Sequence[float | None]) -> int | None:
    """The highest-scored sample (the first on a tie); None when nothing was scored."""
    best: int | None = None
    best_score = 0.0
    for index, score in enumerate(scores):
        if score is not None and (best is None or score > best_score):
            best, best_score = index, score
    return best


def cluster_weights(scores: Sequence[float | None], clusters: Sequence[int]) -> dict[int, float]:
    """Summed scores per answer class; samples without an answer (-1) or a score add nothing."""
    weights: dict[int, float] = {}
    for score, cluster in zip(scores, clusters, strict=True):
        if cluster >= 0:
            weights[cluster] = weights.get(cluster, 0.0) + (score or 0.0)
    return weights


def pick_weighted_majority(scores: Sequence[float | None], clusters: Sequence[int]) -> int | None:
    """The best-scored sample of the heaviest answer class (ties go to the class seen first);
    None when no answered sample has a score, so there is nothing to weigh."""
    if not any(s is not None and c >= 0 for s, c in zip(scores, clusters, strict=True)):
        return None
    weights = cluster_weights(scores, clusters)
    order = list(dict.fromkeys(c for c in clusters if c >= 0))  # first-seen order
    winner = max(order, key=lambda c: (weights[c], -order.index(c)))
    members = [i for i, c in enumerate(clusters) if c == winner]
    return max(members, key=lambda i: (scores[i] if scores[i] is not None else -1.0, -i))


def pick(
    select: Select, scores: Sequence[float | None], clusters: Sequence[int]
) -> tuple[int, str]:
    """(index of the picked sample, how it was picked). Where the scorer scored nothing usable
    the pick falls back to a plain majority vote, then to the first sample."""
    chosen = pick_max(scores) if select == "max" else pick_weighted_majority(scores, clusters)
    if chosen is not None:
        return chosen, select
    winner = majority_cluster(clusters, len(clusters))
    if winner is not None:
        return list(clusters).index(winner), "majority (no scores)"
    return 0, "first (no scores, no answers)"


class BestOfN(NSampleStrategy[Options]):
    name: ClassVar[str] = "best-of-n"
    default_temperature: ClassVar[float] = 0.7
    needs_scorer: ClassVar[bool] = True
    options_model = Options
    one_call_checks: ClassVar[bool] = True
    grade_after_generation: ClassVar[bool] = True

    def prepare(self, verifier: Verifier, config: StrategyConfig) -> None:
        if config.scorer is None:
            raise ConfigError("best-of-n needs strategy.scorer (e.g. strategy.scorer.name=judge)")
        require_blind(config.scorer, config, "the best-of-n scorer")

    def scorer_batch(self, options: Options) -> int | None:
        return options.scorer_batch

    def pick(self, samples: Samples, options: Options) -> Pick:
        verdicts, scored, clusters = samples.verdicts, samples.scored, samples.clusters
        scores = [scorer_score(v) for v in scored]
        chosen, how = pick(options.select, scores, clusters)
        weights = cluster_weights(scores, clusters)
        tree: list[dict[str, Any]] = [
            {
                "id": i,
                "parent": None,
                "cluster": clusters[i],
                "score": scores[i],
                "cluster_weight": weights.get(clusters[i]),
                "scorer_status": v.status,
                "scorer_feedback": v.feedback,
                "scorer_details": v.details,
                "picked": i == chosen,
            }
            for i, v in enumerate(scored)
        ]
        verdict = dataclasses.replace(
            verdicts[chosen],
            details={
                **verdicts[chosen].details,
                "picked_sample": chosen,
                "picked_by": how,
                "scorer_score": scores[chosen],
                "scorer_errors": sum(s is None for s in scores),
            },
        )
        return Pick(verdict, verdict.answer, tree)
