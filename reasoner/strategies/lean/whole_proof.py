"""`lean-whole-proof`: sample n complete proofs per problem and check each with the run's
verifier (the Lean verifier), DeepSeek-Prover style. Lean needs no gold answer, so the check
may pick the answer: the problem's verdict is the first accepted proof's, or the first
sample's when none is accepted. Every sample's verdict is kept, so the summary's pass@k is
the unbiased pass@k of the n samples.

The prompt is the benchmark's (`prompts/lean_proof`); one engine call for all problems, each
problem verified as soon as its samples are done.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import ClassVar

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.strategies.base import Strategy, StrategyConfig, TraceCallback, charge, problem_seed
from reasoner.strategies.sampling import cluster_answers
from reasoner.types import GenerationRequest, Problem, Step, Trace, Usage
from reasoner.verifiers.base import Verifier


class LeanWholeProof(Strategy):
    name: ClassVar[str] = "lean-whole-proof"
    default_temperature: ClassVar[float] = 0.7

    def validate(self, config: StrategyConfig) -> None:
        if config.n < 1:
            raise ConfigError(f"strategy.n (proofs per problem) must be >= 1, got {config.n}")
        if config.options:
            raise ConfigError(
                f"lean-whole-proof takes no strategy.options (got {', '.join(config.options)})"
            )

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
            problem = problems[index]
            verdicts = verifier.verify_batch([(problem, c) for c in completions])
            accepted = next((i for i, v in enumerate(verdicts) if v.is_correct), None)
            chosen = 0 if accepted is None else accepted
            usage = Usage(engine_calls=1, verifier_calls=len(completions))
            charge(usage, completions)
            usage.wall_time_s = time.perf_counter() - started
            trace = Trace(
                problem=problem,
                steps=[Step(requests[index], completions, verdicts)],
                prediction=None if accepted is None else completions[accepted].text,
                verdict=verdicts[chosen],
                usage=usage,
                clusters=cluster_answers(verifier, problem, verdicts),
            )
            traces[index] = trace
            if on_trace is not None:
                on_trace(trace)
        return [t for t in traces if t is not None]
