"""Program-aided solving (PAL, Gao et al. 2023): the model writes Python, the sandbox runs it, and
the last line it prints is the answer; with n > 1, a majority vote over the printed answers
(PAL with self-consistency).

The strategy runs the programs itself, in the bubblewrap sandbox of the verifiers, and hands
the printed line to the run's verifier (`math`) as the solution's final line, so a benchmark
keeps its own verifier. A program that finds no code, crashes, times out or prints nothing is a
sample without an answer (`incorrect`, never voted), its error kept in the verdict's feedback and
details; a sandbox that cannot start is the verifier's failure (`error`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.strategies.base import (
    Strategy,
    StrategyConfig,
    TraceCallback,
    charge,
    parse_options,
    problem_seed,
)
from reasoner.strategies.sampling import cluster_answers
from reasoner.strategies.voting import majority_cluster
from reasoner.types import Completion, GenerationRequest, Problem, Step, Trace, Usage, Verdict
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.code_exec import ProgramAidedMathVerifier, extract_program
from reasoner.verifiers.sandbox import SandboxLimits, SandboxResult, default_limits, run_in_sandbox

_TAIL_CHARS = 2000


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: the program-writing prompt (a prompt name or folder); it replaces the run's prompt
    prompt: str = "math_program"
    #: sandboxed programs run at once
    workers: int = Field(default=2, ge=1)
    #: wall-clock seconds per program; None: the sandbox policy's
    wall_seconds: float | None = Field(default=None, gt=0)
    #: chain-of-thought samples drawn beside the n programs, in the same engine call, and voted
    #: with their printed answers (mixed PAL + CoT self-consistency); 0: programs only
    cot_n: int = Field(default=0, ge=0)
    #: the chain-of-thought prompt of those samples
    cot_prompt: str = "math_cot"


@dataclasses.dataclass(frozen=True)
class ProgramRun:
    """What running one sample's program gave: the printed answer line, or why there is none."""

    printed: str | None
    failure: Verdict | None  # set when there is no printed line to check
    details: dict[str, Any]


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def run_program(text: str, limits: SandboxLimits) -> ProgramRun:
    """The sample's last ```python block, run in the sandbox; never raises."""
    code = extract_program(text)
    if code is None:
        return ProgramRun(None, Verdict("incorrect", 0.0, "no code found"), {"program": None})
    result = run_in_sandbox(code, limits=limits)
    details = _run_details(result)
    if result.status == "sandbox_error":
        return ProgramRun(None, Verdict("error", 0.0, f"sandbox failed: {result.reason}"), details)
    if not result.ok:
        if result.status == "nonzero_exit":
            feedback = last_line(result.stderr) or f"program failed ({result.reason})"
        else:
            feedback = f"program stopped: {result.reason}"
        return ProgramRun(None, Verdict("incorrect", 0.0, feedback), details)
    printed = last_line(result.stdout)
    if not printed:
        return ProgramRun(None, Verdict("incorrect", 0.0, "program printed nothing"), details)
    return ProgramRun(printed, None, {**details, "printed": printed})


def _run_details(result: SandboxResult) -> dict[str, Any]:
    return {
        "sandbox_status": result.status,
        "returncode": result.returncode,
        "wall_s": result.wall_s,
        "stdout_tail": result.stdout[-_TAIL_CHARS:],
        "stderr_tail": result.stderr[-_TAIL_CHARS:],
    }


def grade_runs(verifier: Verifier, problem: Problem, runs: Sequence[ProgramRun]) -> list[Verdict]:
    """The run's verifier on each printed line, read as a solution's final line; a run without
    one keeps its failure verdict, with the sandbox's details."""
    printed = [r for r in runs if r.printed is not None]
    checked = iter(
        verifier.verify_batch(
            [(problem, Completion(r.printed or "", "stop", 0, 0)) for r in printed]
        )
    )
    verdicts = []
    for run in runs:
        verdict = run.failure if run.printed is None else next(checked)
        assert verdict is not None
        verdicts.append(dataclasses.replace(verdict, details={**verdict.details, **run.details}))
    return verdicts


class ProgramAided(Strategy):
    name: ClassVar[str] = "program-aided"
    default_temperature: ClassVar[float] = 0.0

    def validate(self, config: StrategyConfig) -> None:
        self.options(config)

    def options(self, config: StrategyConfig) -> Options:
        if config.n < 1:
            raise ConfigError(f"strategy.n must be at least 1, got {config.n}")
        if config.n > 1 and config.sampling.temperature == 0:
            raise ConfigError(
                f"program-aided with strategy.n={config.n} at sampling.temperature=0 draws "
                "n identical programs; set sampling.temperature above 0"
            )
        if config.budget.tokens is not None:
            raise ConfigError(
                "program-aided makes one engine call per problem, so strategy.budget_tokens "
                "cannot bind; size it with strategy.n and sampling.max_tokens instead"
            )
        if config.budget.calls is not None and config.budget.calls < 1:
            raise ConfigError("program-aided needs one engine call: strategy.budget_calls >= 1")
        options = parse_options(Options, config.options, self.name)
        self.prompt(options)
        self.cot_prompt(options)
        return options

    def prompts(self, config: StrategyConfig) -> list[PromptTemplate]:
        options = parse_options(Options, config.options, self.name)
        cot = self.cot_prompt(options)
        return [self.prompt(options), *([cot] if cot is not None else [])]

    @staticmethod
    def prompt(options: Options) -> PromptTemplate:
        try:
            return load_prompt(options.prompt)
        except ConfigError as exc:
            raise ConfigError(f"strategy.options.prompt: {exc}") from None

    @staticmethod
    def cot_prompt(options: Options) -> PromptTemplate | None:
        if options.cot_n == 0:
            return None
        try:
            return load_prompt(options.cot_prompt)
        except ConfigError as exc:
            raise ConfigError(f"strategy.options.cot_prompt: {exc}") from None

    def run(
        self,
        problems: Sequence[Problem],
        generator: Generator,
        verifier: Verifier,
        config: StrategyConfig,
        on_trace: TraceCallback | None = None,
    ) -> list[Trace]:
        options = self.options(config)
        if isinstance(verifier, ProgramAidedMathVerifier):
            raise ConfigError(
                "program-aided runs the programs itself and checks what they print: use the "
                "`math` verifier, not `python-math` (which would run the printed answer as code)"
            )
        limits = default_limits()
        if options.wall_seconds is not None:
            limits = dataclasses.replace(limits, wall_seconds=options.wall_seconds)
        parts = [(self.prompt(options), config.n)]
        cot = self.cot_prompt(options)
        if cot is not None:
            parts.append((cot, options.cot_n))
        # one engine call: request part * len(problems) + i is problem i's share of that part
        requests = [
            GenerationRequest(
                messages=template.render(problem),
                sampling=dataclasses.replace(
                    config.sampling, n=n, seed=problem_seed(config.seed, problem.id) + part
                ),
            )
            for part, (template, n) in enumerate(parts)
            for problem in problems
        ]
        started = time.perf_counter()
        steps: list[dict[int, Step]] = [{} for _ in problems]
        traces: list[Trace | None] = [None] * len(problems)
        with ThreadPoolExecutor(max_workers=options.workers) as pool:
            for index, completions in generator.generate_stream(requests):
                part, position = divmod(index, len(problems))
                problem = problems[position]
                if part == 0:
                    runs = list(pool.map(lambda c: run_program(c.text, limits), completions))
                    verdicts = grade_runs(verifier, problem, runs)
                else:
                    verdicts = verifier.verify_batch([(problem, c) for c in completions])
                steps[position][part] = Step(requests[index], completions, verdicts)
                if len(steps[position]) < len(parts):
                    continue
                trace = self._trace(
                    problem, [steps[position][p] for p in range(len(parts))], verifier, started
                )
                traces[position] = trace
                if on_trace is not None:
                    on_trace(trace)
        return [t for t in traces if t is not None]

    @staticmethod
    def _trace(problem: Problem, steps: list[Step], verifier: Verifier, started: float) -> Trace:
        """The vote over every part's answers: the programs' printed lines, then any CoT's."""
        completions = [c for step in steps for c in step.completions]
        verdicts = [v for step in steps for v in step.verdicts]
        clusters = cluster_answers(verifier, problem, verdicts)
        winner = majority_cluster(clusters, len(clusters))
        if winner is not None:
            chosen = verdicts[clusters.index(winner)]
        elif verdicts:  # no program printed an answer: the first sample stands for the problem
            chosen = verdicts[0]
        else:
            chosen = Verdict("incorrect", 0.0, "the engine returned no samples")
        # one check per sample, as the python-math verifier counts a run plus its answer check
        usage = Usage(engine_calls=1, verifier_calls=len(completions))
        for step in steps:  # each part's prompt is counted once
            charge(usage, step.completions)
        usage.wall_time_s = time.perf_counter() - started
        return Trace(
            problem=problem,
            steps=steps,
            prediction=chosen.answer,
            verdict=chosen,
            usage=usage,
            clusters=clusters,
        )
