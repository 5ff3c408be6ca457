"""Verifiers that run the model's code: program-aided math and unit tests.

The code runs only in the bubblewrap sandbox. What the program does wrong (raises, hangs,
allocates, floods) is the model's failure and reads as `incorrect` with feedback a refine loop
can show; only a sandbox that cannot start is the verifier's failure (`error`).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import secrets
from typing import Any

from reasoner.types import Completion, Problem, Verdict, VerdictStatus
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.math_answer import MathAnswerVerifier
from reasoner.verifiers.sandbox import SandboxLimits, SandboxResult, default_limits, run_in_sandbox

# An unclosed fence counts: a completion cut at max_tokens still shows its (broken) program.
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "python3", "py"}
_MARKER = "@@reasoner-unit-tests"
_TAIL_CHARS = 2000


def extract_program(text: str) -> str | None:
    """The last ```python block, else the last untagged block, else the whole text when it has
    no fence at all; None when there is nothing to run (only other languages, or blank)."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    for wanted in (_PYTHON_TAGS, {""}):
        tagged = [code for tag, code in blocks if tag in wanted]
        if tagged:
            return tagged[-1] if tagged[-1].strip() else None
    if blocks:
        return None
    return text if text.strip() else None


def last_line(text: str) -> str:
    """The last non-blank line, stripped (a program's answer, an exception's message)."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def run_details(result: SandboxResult) -> dict[str, Any]:
    """What a verdict keeps of a sandboxed run: its status, exit code, time and output tails."""
    return {
        "sandbox_status": result.status,
        "returncode": result.returncode,
        "wall_s": result.wall_s,
        "stdout_tail": result.stdout[-_TAIL_CHARS:],
        "stderr_tail": result.stderr[-_TAIL_CHARS:],
    }


def failed_run(result: SandboxResult, details: dict[str, Any]) -> Verdict:
    """A run that did not end cleanly: the sandbox's fault is `error`, the program's is
    `incorrect` with the exception (last traceback line) or the limit it hit."""
    if result.status == "sandbox_error":
        return Verdict("error", 0.0, f"sandbox failed: {result.reason}", None, details)
    if result.status == "nonzero_exit":
        feedback = last_line(result.stderr) or f"program failed ({result.reason})"
    else:
        feedback = f"program stopped: {result.reason}"
    return Verdict("incorrect", 0.0, feedback, None, details)


class ProgramAidedMathVerifier(Verifier):
    """Program-aided math (PAL): the model writes a program whose last printed line is the
    answer, checked against the gold answer exactly as the math verifier checks a solution."""

    name = "python-math"
    max_concurrency = 2
    runs_completion_as_code = True

    def __init__(
        self, limits: SandboxLimits | None = None, timeout_s: float = 10.0, workers: int = 2
    ) -> None:
        self.limits = limits or default_limits()
        self.timeout_s = timeout_s  # of the printed answer's check; the program has `limits`
        self._math = MathAnswerVerifier(timeout_s=timeout_s, workers=workers)

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        code = extract_program(completion.text)
        if code is None:
            return Verdict("incorrect", 0.0, "no code found")
        result = run_in_sandbox(code, limits=self.limits)
        details = run_details(result)
        if not result.ok:
            return failed_run(result, details)
        printed = last_line(result.stdout)
        if not printed:
            return Verdict("incorrect", 0.0, "program printed nothing", None, details)
        # The printed line is read as a solution's final line: `42`, `x = 42`, `\boxed{3/4}`.
        as_text = Completion(printed, "stop", prompt_tokens=0, completion_tokens=0)
        verdict = self._math.verify(problem, as_text)
        details.update(verdict.details, printed=printed)
        feedback = verdict.feedback
        if verdict.answer is None and verdict.status == "incorrect":
            feedback = f"program printed {printed!r}, which holds no answer"
        return dataclasses.replace(verdict, feedback=feedback, details=details)

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        return self._math.equivalent(problem, a, b)

    def close(self) -> None:
        self._math.close()


@dataclasses.dataclass(frozen=True)
class _Case:
    source: str
    counted: bool  # setup statements (defs, imports, assignments) run but are not scored


# Runs in the sandbox. The model's code runs first, in its own namespace, then each case with
# its own try/except. The report goes out on a line that starts with a marker holding a fresh
# nonce, written straight to fd 1 (the code may have replaced sys.stdout), so a program that
# prints a report of its own cannot pass for the harness. The harness deletes its file first so
# the nonce is not sitting in the work directory. Code that inspects the harness's frames can
# still find the nonce: in-process tests cannot be tamper-proof against deliberate attack.
_HARNESS = """\
import json as _json, os as _os, sys as _sys


def _describe(exc):
    text = str(exc)
    return type(exc).__name__ + (": " + text if text else "")


def _main(marker, nonce, solution, cases):
    try:
        _os.unlink(__file__)
    except OSError:
        pass
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    report = {"solution_error": None, "results": []}
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
    except BaseException as exc:
        report["solution_error"] = _describe(exc)
    else:
        for index, source in enumerate(cases):
            try:
                exec(compile(source, "test_" + str(index), "exec"), namespace)
                report["results"].append(None)
            except BaseException as exc:
                report["results"].append(_describe(exc))
    for stream in (_sys.stdout, _sys.stderr):  # the code's own prints, for the details
        try:
            stream.flush()
        except BaseException:
            pass
    line = "\\n" + marker + ":" + nonce + " " + _json.dumps(report) + "\\n"
    _os.write(1, line.encode())
    _os._exit(0)
"""


def _harness(nonce: str, solution: str, cases: list[_Case]) -> str:
    sources = [case.source for case in cases]
    return _HARNESS + f"\n\n_main({_MARKER!r}, {nonce!r}, {solution!r}, {sources!r})\n"


def _parse_tests(tests: object) -> list[_Case]:
    """A list is one scored case per item; a string of test code is split into top-level
    statements, of which asserts and bare calls (`check(candidate)`) are scored."""
    if isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
        return [_Case(t, True) for t in tests]
    if isinstance(tests, str) and tests.strip():
        module = ast.parse(tests)
        return [
            _Case(
                ast.get_source_segment(tests, node) or ast.unparse(node),
                isinstance(node, ast.Assert | ast.Expr),
            )
            for node in module.body
        ]
    raise ValueError("metadata['tests'] must be a non-empty list of strings or a string")


def _read_report(stdout: str, nonce: str) -> dict[str, Any] | None:
    prefix = f"{_MARKER}:{nonce} "
    lines = [line for line in stdout.splitlines() if line.startswith(prefix)]
    if not lines:
        return None
    try:
        report = json.loads(lines[-1][len(prefix) :])
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, dict) else None


def _score(cases: list[_Case], results: list[str | None]) -> tuple[int, int, str | None]:
    """(passed, scored, feedback on the first failure, setup included)."""
    passed = sum(
        1 for case, error in zip(cases, results, strict=True) if case.counted and error is None
    )
    scored = sum(1 for case in cases if case.counted)
    first = next(((c, e) for c, e in zip(cases, results, strict=True) if e is not None), None)
    feedback = None
    if first is not None:
        case, error = first
        kind = "test" if case.counted else "test setup"
        feedback = f"{kind} failed: {_one_line(case.source)} -> {error}"
    return passed, scored, feedback


def _one_line(source: str, limit: int = 200) -> str:
    flat = " ".join(source.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class UnitTestVerifier(Verifier):
    """The model's code followed by the problem's tests (`problem.metadata["tests"]`); the
    score is the fraction of scored tests that pass."""

    name = "unit-tests"
    max_concurrency = 2
    runs_completion_as_code = True

    def __init__(self, limits: SandboxLimits | None = None, timeout_s: float | None = None) -> None:
        """`timeout_s`, where given, is the program's wall-clock limit."""
        self.limits = limits or default_limits()
        if timeout_s is not None:
            self.limits = dataclasses.replace(self.limits, wall_seconds=timeout_s)
        self.timeout_s = self.limits.wall_seconds

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        try:
            cases = _parse_tests(problem.metadata.get("tests"))
        except (ValueError, SyntaxError) as exc:
            return Verdict("error", 0.0, f"problem {problem.id!r} has no usable tests: {exc}")
        if not any(case.counted for case in cases):
            return Verdict("error", 0.0, f"problem {problem.id!r} has no asserts in its tests")
        code = extract_program(completion.text)
        if code is None:
            return Verdict("incorrect", 0.0, "no code found")
        nonce = secrets.token_hex(16)
        result = run_in_sandbox(_harness(nonce, code, cases), limits=self.limits)
        details = run_details(result)
        report = _read_report(result.stdout, nonce) if result.ok else None
        if report is None:
            if result.ok:
                return Verdict("incorrect", 0.0, "the tests did not finish", None, details)
            return failed_run(result, details)
        return self._verdict(cases, report, details)

    def _verdict(
        self, cases: list[_Case], report: dict[str, Any], details: dict[str, Any]
    ) -> Verdict:
        if report.get("solution_error"):
            feedback = f"the code raised before any test ran: {report['solution_error']}"
            return Verdict("incorrect", 0.0, feedback, None, details)
        results = report.get("results")
        if not isinstance(results, list) or len(results) != len(cases):
            return Verdict("incorrect", 0.0, "the tests did not finish", None, details)
        passed, scored, failure = _score(cases, results)
        details.update(passed=passed, total=scored)
        status: VerdictStatus = "correct" if failure is None else "incorrect"
        feedback = failure or f"all {scored} tests passed"
        return Verdict(status, passed / scored, feedback, None, details)
