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
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.strategies.base import (
    Strategy,
    StrategyConfig,
    TraceCallback,
    charge,
    charge_scorer,
    checker_view,
    parse_options,
    problem_seed,
    require_blind,
)
from reasoner.strategies.sampling import cluster_answers
from reasoner.strategies.voting import majority_cluster
from reasoner.types import Completion, GenerationRequest, Problem, Step, Trace, Usage, Verdict
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


class BestOfN(Strategy):
    name: ClassVar[str] = "best-of-n"
    default_temperature: ClassVar[float] = 0.7
    needs_scorer: ClassVar[bool] = True

    def validate(self, config: StrategyConfig) -> None:
        self.options(config)

    def options(self, config: StrategyConfig) -> Options:
        if config.n < 1:
            raise ConfigError(f"strategy.n must be at least 1, got {config.n}")
        if config.n > 1 and config.sampling.temperature == 0:
            raise ConfigError(
                f"best-of-n with strategy.n={config.n} at sampling.temperature=0 draws "
                "n identical samples; set sampling.temperature above 0"
            )
        if config.budget.tokens is not None:
            raise ConfigError(
                "best-of-n makes one engine call per problem, so strategy.budget_tokens "
                "cannot bind; size it with strategy.n and sampling.max_tokens instead"
            )
        if config.budget.calls is not None and config.budget.calls < 1:
            raise ConfigError("best-of-n needs one engine call: strategy.budget_calls >= 1")
        return parse_options(Options, config.options, self.name)

    def run(
        self,
        problems: Sequence[Problem],
        generator: Generator,
        verifier: Verifier,
        config: StrategyConfig,
        on_trace: TraceCallback | None = None,
    ) -> list[Trace]:
        options = self.options(config)
        scorer = config.scorer
        if scorer is None:
            raise ConfigError("best-of-n needs strategy.scorer (e.g. strategy.scorer.name=judge)")
        require_blind(scorer, config, "the best-of-n scorer")
        started = time.perf_counter()
        requests = [
            GenerationRequest(
                messages=config.prompt.render(problem),
                sampling=dataclasses.replace(
                    config.sampling, n=config.n, seed=problem_seed(config.seed, problem.id)
                ),
            )
            for problem in problems
        ]
        outputs = generator.generate(requests) if requests else []
        traces: list[Trace] = []
        size = options.scorer_batch or max(1, len(problems))
        for start in range(0, len(problems), size):
            chunk = range(start, min(start + size, len(problems)))
            pairs = [(problems[i], c) for i in chunk for c in outputs[i]]
            verdicts = iter(verifier.verify_batch(pairs))
            scores = iter(scorer.verify_batch([(checker_view(p, config), c) for p, c in pairs]))
            for i in chunk:
                k = len(outputs[i])
                trace = self._trace(
                    problems[i],
                    requests[i],
                    outputs[i],
                    [next(verdicts) for _ in range(k)],
                    [next(scores) for _ in range(k)],
                    verifier,
                    options.select,
                    started,
                )
                traces.append(trace)
                if on_trace is not None:
                    on_trace(trace)
        return traces

    @staticmethod
    def _trace(
        problem: Problem,
        request: GenerationRequest,
        completions: list[Completion],
        verdicts: list[Verdict],
        scored: list[Verdict],
        verifier: Verifier,
        select: Select,
        started: float,
    ) -> Trace:
        clusters = cluster_answers(verifier, problem, verdicts)
        scores = [scorer_score(v) for v in scored]
        usage = Usage(engine_calls=1, verifier_calls=2 * len(completions))
        charge(usage, completions)
        charge_scorer(usage, scored)
        if not completions:  # nothing came back: the problem has no answer to pick
            empty = Verdict("incorrect", 0.0, "the engine returned no samples")
            usage.wall_time_s = time.perf_counter() - started
            return Trace(problem, [Step(request, [], [])], None, empty, usage)
        chosen, how = pick(select, scores, clusters)
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
        usage.wall_time_s = time.perf_counter() - started
        return Trace(
            problem=problem,
            steps=[Step(request, completions, verdicts)],
            prediction=verdict.answer,
            verdict=verdict,
            usage=usage,
            clusters=clusters,
            tree=tree,
        )
