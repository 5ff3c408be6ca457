"""The loop every n-sample strategy shares: n seeded samples per problem from one engine call,
each graded, one chosen. A subclass is its selection rule (`pick`), and where needed its own
grading (`verify`), extra prompt parts (`parts`) and option checks (`check`).

What the base owns, so it is written once: the `strategy.n >= 1` check, the per-problem seed
(`problem_seed(seed, id) + part`, which resumed runs depend on), the stream loop that grades a
problem as soon as its samples are back (or, with `grade_after_generation`, once the engine call
has finished: a model-based scorer is itself an engine call), a blind scorer's scores where the
strategy needs one, and the trace: usage charged per request, answer clusters, and an
`incorrect` verdict for a problem the engine returned no samples for.
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Generic

from pydantic import BaseModel, ConfigDict

from reasoner.errors import ConfigError
from reasoner.prompts import PromptTemplate
from reasoner.strategies.base import (
    Batch,
    OptionsT,
    Strategy,
    StrategyConfig,
    charge,
    charge_scorer,
    checker_view,
    parse_options,
    problem_seed,
)
from reasoner.strategies.voting import cluster_answers
from reasoner.types import Completion, GenerationRequest, Problem, Step, Trace, Usage, Verdict
from reasoner.verifiers.base import Verifier


class NoOptions(BaseModel):
    """The options of a strategy that takes none: any key is an error naming the strategy."""

    model_config = ConfigDict(extra="forbid")


@dataclasses.dataclass(frozen=True)
class Part:
    """One prompt of a problem's request(s) and the samples drawn from it."""

    prompt: PromptTemplate
    n: int


@dataclasses.dataclass(frozen=True)
class Pick:
    """The sample that stands for the problem: its verdict, the prediction the trace records,
    and any per-sample record of how it was chosen (the trace's `tree`)."""

    verdict: Verdict
    prediction: str | None
    tree: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Samples:
    """One problem's samples as `pick` sees them, all lists in sample order."""

    problem: Problem
    completions: list[Completion]
    #: the run verifier's verdict on each sample
    verdicts: list[Verdict]
    #: the scorer's verdict on each sample where the strategy uses one, else empty
    scored: list[Verdict]
    #: each sample's answer class (-1: no answer)
    clusters: list[int]


def require_samples(config: StrategyConfig) -> None:
    """The one `strategy.n` check of every strategy that samples n answers per problem."""
    if config.n < 1:
        raise ConfigError(f"strategy.n (samples per problem) must be at least 1, got {config.n}")


class NSampleStrategy(Strategy, Generic[OptionsT]):
    #: the strategy's `strategy.options`, checked strictly (unknown keys are errors)
    options_model: type[OptionsT]
    #: refuse temperature 0 with n > 1 (n identical samples) and a token budget (one engine call
    #: per problem cannot be cut short)
    one_call_checks: ClassVar[bool] = False
    #: grade once the engine call has finished rather than as each problem's samples arrive
    grade_after_generation: ClassVar[bool] = False

    def options(self, config: StrategyConfig) -> OptionsT:
        """The checked options; raises a ConfigError naming the bad key or value."""
        require_samples(config)
        if self.one_call_checks:
            if config.n > 1 and config.sampling.temperature == 0:
                raise ConfigError(
                    f"{self.name} with strategy.n={config.n} at sampling.temperature=0 draws "
                    "n identical samples; set sampling.temperature above 0"
                )
            if config.budget.tokens is not None:
                raise ConfigError(
                    f"{self.name} makes one engine call per problem, so strategy.budget_tokens "
                    "cannot bind; size it with strategy.n and sampling.max_tokens instead"
                )
            if config.budget.calls is not None and config.budget.calls < 1:
                raise ConfigError(f"{self.name} needs one engine call: strategy.budget_calls >= 1")
        options = parse_options(self.options_model, config.options, self.name)
        self.check(config, options)
        return options

    def validate(self, config: StrategyConfig) -> None:
        self.options(config)

    def check(self, config: StrategyConfig, options: OptionsT) -> None:
        """Checks beyond the options model (e.g. that a named prompt exists)."""

    def prepare(self, verifier: Verifier, config: StrategyConfig) -> None:
        """Checks that need the run's verifier or scorer, made before anything is generated."""

    def parts(self, config: StrategyConfig, options: OptionsT) -> list[Part]:
        """The prompts each problem is sampled with; part p's seed is the problem's seed + p."""
        return [Part(config.prompt, config.n)]

    def scorer_batch(self, options: OptionsT) -> int | None:
        """Problems graded per call with `grade_after_generation` (None: all at once)."""
        return None

    def verify(
        self, drawn: Sequence[tuple[Problem, list[Step]]], verifier: Verifier, options: OptionsT
    ) -> None:
        """Fill each step's verdicts; by default the run's verifier grades every sample, all
        of `drawn` in one `verify_batch` call."""
        pairs = [
            (p, c)
            for p, steps in drawn
            for step in steps
            for c in step.completions
            if c.finish_reason != "error"
        ]
        verdicts = iter(verifier.verify_batch(pairs))
        for _, steps in drawn:
            for step in steps:
                step.verdicts[:] = [
                    refused(c) if c.finish_reason == "error" else next(verdicts)
                    for c in step.completions
                ]

    @abstractmethod
    def pick(self, samples: Samples, options: OptionsT) -> Pick:
        """Which of the problem's samples stands for it (there is at least one)."""

    def solve(self, batch: Batch) -> None:
        problems, verifier, config = batch.problems, batch.verifier, batch.config
        options = self.options(config)
        self.prepare(verifier, config)
        parts = self.parts(config, options)
        # one engine call: request part * len(problems) + i is problem i's share of that part
        requests = [
            GenerationRequest(
                messages=part.prompt.render(problem),
                sampling=dataclasses.replace(
                    config.sampling, n=part.n, seed=problem_seed(config.seed, problem.id) + index
                ),
            )
            for index, part in enumerate(parts)
            for problem in problems
        ]
        started = time.perf_counter()
        drawn: list[dict[int, Step]] = [{} for _ in problems]

        def finish(positions: Sequence[int]) -> None:
            ready = [(problems[i], [drawn[i][p] for p in range(len(parts))]) for i in positions]
            self.verify(ready, verifier, options)
            scored = self._score(ready, config)
            for position, (problem, steps) in zip(positions, ready, strict=True):
                trace = self._trace(problem, steps, next(scored), verifier, options, started)
                batch.finish(position, trace)

        stream = batch.generator.generate_stream(requests) if requests else iter(())
        for index, completions in stream:
            part, position = divmod(index, len(problems))
            drawn[position][part] = Step(requests[index], completions, [])
            if not self.grade_after_generation and len(drawn[position]) == len(parts):
                finish([position])
        if self.grade_after_generation:
            size = self.scorer_batch(options) or max(1, len(problems))
            for start in range(0, len(problems), size):
                finish(range(start, min(start + size, len(problems))))

    def _score(
        self, drawn: Sequence[tuple[Problem, list[Step]]], config: StrategyConfig
    ) -> Iterator[list[Verdict]]:
        """An iterator of each problem's scorer verdicts (empty lists without a scorer)."""
        scorer = config.scorer if self.needs_scorer_for(config) else None
        counts = [sum(len(s.completions) for s in steps) for _, steps in drawn]
        if scorer is None:
            return iter([[] for _ in drawn])
        pairs = [
            (checker_view(p, config), c) for p, steps in drawn for s in steps for c in s.completions
        ]
        scores = iter(scorer.verify_batch(pairs))
        return iter([[next(scores) for _ in range(k)] for k in counts])

    def _trace(
        self,
        problem: Problem,
        steps: list[Step],
        scored: list[Verdict],
        verifier: Verifier,
        options: OptionsT,
        started: float,
    ) -> Trace:
        completions = [c for step in steps for c in step.completions]
        verdicts = [v for step in steps for v in step.verdicts]
        clusters = cluster_answers(verifier, problem, verdicts)
        # one check per sample (and one per score); each request's prompt counted once
        usage = Usage(engine_calls=1, verifier_calls=len(completions) + len(scored))
        for step in steps:
            charge(usage, step.completions)
        charge_scorer(usage, scored)
        if completions:
            samples = Samples(problem, completions, verdicts, scored, clusters)
            chosen = self.pick(samples, options)
        else:
            chosen = Pick(Verdict("incorrect", 0.0, "the engine returned no samples"), None)
        usage.wall_time_s = time.perf_counter() - started
        return Trace(
            problem=problem,
            steps=steps,
            prediction=chosen.prediction,
            verdict=chosen.verdict,
            usage=usage,
            clusters=clusters,
            tree=chosen.tree,
        )


def refused(completion: Completion) -> Verdict:
    """A request the engine refused (e.g. longer than the context window) is an `error`: no
    answer was generated, so it is neither right nor wrong."""
    reason = completion.text or "the engine refused the request"
    return Verdict("error", 0.0, reason, None, {"error": "engine_refused"})
