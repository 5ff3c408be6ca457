"""`z3-program`: for constraint puzzles (LogicalDeduction, AR-LSAT) the model writes a Python
program that states the puzzle to the z3 solver and prints the chosen option (Logic-LM's
SMT route, SatLM). The program is untrusted code, so it runs only in the bubblewrap sandbox
(`reasoner.verifiers.sandbox`), where the venv's z3 is importable read-only and the network,
the file system and the environment are out of reach.

K programs per problem, majority over the letters they print, and programs that crash, time out
or print no option letter are sent back with the error (the last lines of the traceback) for
repair; see `execute_vote` for the loop and what is recorded.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import Field

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.strategies.execute_vote import ExecuteAndVote, ExecuteOptions, Outcome
from reasoner.strategies.fol_prover import option_letters
from reasoner.types import Problem
from reasoner.verifiers import sandbox
from reasoner.verifiers.sandbox import SandboxLimits, default_limits, run_in_sandbox

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_LETTER = re.compile(r"^[\s\"'(*]*([A-Z])[\s\"').*]*$")
_CUED = re.compile(r"\b(?:answer|option)\b(?:\s+is)?\s*[:：]?\s*\(?([A-Z])\b", re.I)
_TRACEBACK_LINES = 12


class Options(ExecuteOptions):
    prompt: str = "z3_program"
    refine_prompt: str = "z3_refine"
    #: per-program limits; None keeps verifiers/sandbox/policy.yaml's
    wall_seconds: float | None = Field(None, gt=0)
    cpu_seconds: float | None = Field(None, gt=0)


def extract_program(text: str) -> str | None:
    """The last ```python block (an unclosed last fence runs to the end), else the whole reply
    if it imports z3; None when there is no program."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if blocks:
        return blocks[-1]
    return text if re.search(r"^\s*(?:from|import)\s+z3\b", text, re.M) else None


@lru_cache(maxsize=16)
def example_programs(prompt: str) -> frozenset[str]:
    """The few-shot programs of a prompt, whitespace-squashed: a copied example runs and
    prints a letter that would score by chance."""
    template = load_prompt(prompt)
    text = f"{template.system or ''}\n{template.user}"
    return frozenset(" ".join(block.split()) for block in _FENCE.findall(text) if block.strip())


def read_choice(stdout: str, letters: set[str]) -> str | None:
    """The option the program printed: its last line that is a bare letter or a cued one."""
    for line in reversed([line for line in stdout.splitlines() if line.strip()]):
        match = _LETTER.match(line) or _CUED.search(line)
        if match and match.group(1) in letters:
            return match.group(1)
    return None


def _limits(options: Options) -> SandboxLimits:
    limits = default_limits()
    if options.wall_seconds is not None:
        limits = dataclasses.replace(limits, wall_seconds=options.wall_seconds)
    if options.cpu_seconds is not None:
        limits = dataclasses.replace(limits, cpu_seconds=options.cpu_seconds)
    return limits


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_TRACEBACK_LINES:])


class Z3Program(ExecuteAndVote[Options]):
    name: ClassVar[str] = "z3-program"
    options_model = Options

    def check_ready(self, options: Options) -> None:
        if shutil.which(sandbox.BWRAP) is None:
            raise ConfigError(
                "the z3-program strategy runs model-written programs in the bubblewrap "
                "sandbox, and `bwrap` is not on PATH: apt-get install bubblewrap"
            )

    def execute(self, problem: Problem, text: str, options: Options) -> Outcome:
        letters = set(option_letters(problem).values())
        if not letters:
            return Outcome(None, "no_options", f"problem {problem.id!r} has no options", True)
        program = extract_program(text)
        if program is None:
            return Outcome(None, "no_program", "your reply has no ```python code block")
        if " ".join(program.split()) in example_programs(options.prompt):
            message = "that is an example's program; write the program for this problem"
            return Outcome(None, "copied_example", message)
        result = run_in_sandbox(program, limits=_limits(options))
        details: dict[str, Any] = {
            "sandbox": {"status": result.status, "reason": result.reason, "wall_s": result.wall_s},
            "stdout": result.stdout[-500:],
        }
        if result.status == "sandbox_error":
            return Outcome(None, "sandbox_error", result.reason, True, details)
        if result.status != "ok":
            message = f"the program failed ({result.reason})"
            tail = _tail(result.stderr)
            if tail:
                message += f":\n{tail}"
            kind = "runtime_error" if result.status == "nonzero_exit" else result.status
            return Outcome(None, kind, message, False, details)
        choice = read_choice(result.stdout, letters)
        if choice is None:
            shown = _tail(result.stdout)[-300:] or "nothing"
            allowed = ", ".join(sorted(letters))
            message = f"the program printed {shown!r}; it must print one option letter ({allowed})"
            return Outcome(None, "no_answer", message, False, details)
        return Outcome(choice, None, "", False, details)
