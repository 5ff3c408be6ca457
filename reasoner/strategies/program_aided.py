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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from reasoner.errors import ConfigError
from reasoner.prompts import PromptTemplate, load_prompt
from reasoner.strategies.base import StrategyConfig, parse_options
from reasoner.strategies.n_sample import NSampleStrategy, Part, Pick, Samples
from reasoner.strategies.sampling import majority_pick
from reasoner.types import Completion, Problem, Step, Verdict
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.code_exec import (
    extract_program,
    failed_run,
    last_line,
    run_details,
)
from reasoner.verifiers.sandbox import SandboxLimits, default_limits, run_in_sandbox


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


def run_program(text: str, limits: SandboxLimits) -> ProgramRun:
    """The sample's last ```python block, run in the sandbox; never raises."""
    code = extract_program(text)
    if code is None:
        return ProgramRun(None, Verdict("incorrect", 0.0, "no code found"), {"program": None})
    result = run_in_sandbox(code, limits=limits)
    details = run_details(result)
    if not result.ok:
        return ProgramRun(None, failed_run(result, details), details)
    printed = last_line(result.stdout)
    if not printed:
        return ProgramRun(None, Verdict("incorrect", 0.0, "program printed nothing"), details)
    return ProgramRun(printed, None, {**details, "printed": printed})


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


class ProgramAided(NSampleStrategy[Options]):
    name: ClassVar[str] = "program-aided"
    default_temperature: ClassVar[float] = 0.0
    options_model = Options
    one_call_checks: ClassVar[bool] = True

    def check(self, config: StrategyConfig, options: Options) -> None:
        self.parts(config, options)  # the named prompts exist

    def prompts(self, config: StrategyConfig) -> list[PromptTemplate]:
        options = parse_options(Options, config.options, self.name)
        return [part.prompt for part in self.parts(config, options)]

    def parts(self, config: StrategyConfig, options: Options) -> list[Part]:
        """The programs, then any chain-of-thought samples voted beside them."""
        parts = [Part(_load(options.prompt, "prompt"), config.n)]
        if options.cot_n > 0:
            parts.append(Part(_load(options.cot_prompt, "cot_prompt"), options.cot_n))
        return parts

    def prepare(self, verifier: Verifier, config: StrategyConfig) -> None:
        checker = verifier.unwrapped()  # the verifier behind a Ray or serving wrapper
        if checker.runs_completion_as_code:
            raise ConfigError(
                "program-aided runs the programs itself and checks what they print: use a "
                f"verifier that reads answers such as `math`, not {checker.name!r} (which "
                "would run the printed answer as code)"
            )

    def verify(
        self, drawn: Sequence[tuple[Problem, list[Step]]], verifier: Verifier, options: Options
    ) -> None:
        """Part 0's programs are run and their printed lines graded; CoT samples as usual."""
        limits = default_limits()
        if options.wall_seconds is not None:
            limits = dataclasses.replace(limits, wall_seconds=options.wall_seconds)
        for problem, (programs, *cot) in drawn:
            with ThreadPoolExecutor(max_workers=options.workers) as pool:
                runs = list(pool.map(lambda c: run_program(c.text, limits), programs.completions))
            programs.verdicts[:] = grade_runs(verifier, problem, runs)
            super().verify([(problem, cot)], verifier, options)

    def pick(self, samples: Samples, options: Options) -> Pick:
        """The vote over every part's answers: the programs' printed lines, then any CoT's."""
        return majority_pick(samples)


def _load(name: str, key: str) -> PromptTemplate:
    try:
        return load_prompt(name)
    except ConfigError as exc:
        raise ConfigError(f"strategy.options.{key}: {exc}") from None
