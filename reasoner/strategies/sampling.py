"""Sample n answers per problem in one engine call, verify each, and vote.

Greedy decoding is the n=1, temperature-0 case of self-consistency (Wang et al., 2023), so both
share this one loop; what differs is only the defaults.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import ClassVar

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.strategies.base import Strategy, StrategyConfig, TraceCallback, problem_seed
from reasoner.strategies.voting import majority_cluster
from reasoner.types import Completion, GenerationRequest, Problem, Step, Trace, Usage, Verdict
from reasoner.verifiers.base import Verifier


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


def build_trace(
    problem: Problem,
    request: GenerationRequest,
    completions: list[Completion],
    verifier: Verifier,
    started: float,
) -> Trace:
    verdicts = verifier.verify_batch([(problem, c) for c in completions])
    clusters = cluster_answers(verifier, problem, verdicts)
    winner = majority_cluster(clusters, len(clusters))
    # with no answer among the samples, the first sample's verdict stands for the problem
    chosen = verdicts[0] if winner is None else verdicts[clusters.index(winner)]
    usage = Usage(
        prompt_tokens=completions[0].prompt_tokens if completions else 0,
        cached_prompt_tokens=completions[0].cached_prompt_tokens if completions else 0,
        completion_tokens=sum(c.completion_tokens for c in completions),
        engine_calls=1,
        verifier_calls=len(completions),
        wall_time_s=time.perf_counter() - started,
    )
    return Trace(
        problem=problem,
        steps=[Step(request, completions, verdicts)],
        prediction=chosen.answer,
        verdict=chosen,
        usage=usage,
        clusters=clusters,
    )


class SelfConsistency(Strategy):
    name: ClassVar[str] = "self-consistency"
    default_temperature: ClassVar[float] = 0.7

    def validate(self, config: StrategyConfig) -> None:
        if config.n < 1:
            raise ConfigError(f"strategy.n must be at least 1, got {config.n}")

    def run(
        self,
        problems: Sequence[Problem],
        generator: Generator,
        verifier: Verifier,
        config: StrategyConfig,
        on_trace: TraceCallback | None = None,
    ) -> list[Trace]:
        self.validate(config)
        requests = [
            GenerationRequest(
                messages=config.prompt.render(problem),
                sampling=dataclasses.replace(
                    config.sampling, n=config.n, seed=problem_seed(config.seed, problem.id)
                ),
            )
            for problem in problems
        ]
        started = time.perf_counter()
        traces: list[Trace | None] = [None] * len(problems)
        for index, completions in generator.generate_stream(requests):
            trace = build_trace(problems[index], requests[index], completions, verifier, started)
            traces[index] = trace
            if on_trace is not None:
                on_trace(trace)
        return [t for t in traces if t is not None]


class Greedy(SelfConsistency):
    """Chain-of-thought with greedy decoding: one sample at temperature 0."""

    name: ClassVar[str] = "greedy"
    default_temperature: ClassVar[float] = 0.0

    def validate(self, config: StrategyConfig) -> None:
        if config.n != 1:
            raise ConfigError(
                f"the greedy strategy takes n=1 (got n={config.n}); use --strategy self-consistency"
            )
