"""lean-dojo as a tactic environment, for theorems in repositories traced with lean-dojo.

lean-dojo is an optional extra (`pip install 'reasoner[lean-dojo]'`), imported only when this
environment is built. A theorem is named the lean-dojo way: a traced repository (URL and
commit), a file and the theorem's full name, taken from the problem's metadata (`repo_url`,
`commit`, `file_path`, `full_name`) or from the environment's defaults; the full name defaults
to the name the formal statement declares.

lean-dojo's result types are matched by class name (`TacticState`, `ProofFinished`,
`ProofGivenUp`, and `LeanError` / `TacticError` / `TimeoutError`, which carry `.error`), since
they were renamed across its releases. Dojo's hard timeout uses SIGALRM, which works only on
the main thread, so this environment runs one tactic at a time (`max_concurrency = 1`).
"""

from __future__ import annotations

import importlib
from typing import Any

from reasoner.strategies.lean.environment import (
    EnvironmentUnavailable,
    StartError,
    TacticEnvironment,
    TacticOutcome,
    TacticState,
)
from reasoner.types import Problem
from reasoner.verifiers.lean.source import theorem_name

INSTALL = "lean-dojo is not installed: pip install 'reasoner[lean-dojo]' (or pip install lean-dojo)"


class DojoEnvironment(TacticEnvironment):
    max_concurrency = 1

    def __init__(
        self,
        repo_url: str | None = None,
        commit: str | None = None,
        *,
        file_path: str | None = None,
        dojo_kwargs: dict[str, Any] | None = None,
        module: Any = None,
    ) -> None:
        """`module` is lean_dojo itself, or a stand-in with the same names."""
        self.repo_url, self.commit, self.file_path = repo_url, commit, file_path
        self.dojo_kwargs = dict(dojo_kwargs or {})
        self.unavailable: str | None = None
        self._dojo = module
        if module is None:
            try:
                self._dojo = importlib.import_module("lean_dojo")
            except ImportError:
                self.unavailable = INSTALL
        self._open: dict[str, tuple[Any, Any]] = {}  # problem id -> (Dojo, its entered self)

    def start(self, problem: Problem) -> TacticState:
        if self.unavailable is not None:
            raise EnvironmentUnavailable(self.unavailable)
        metadata = problem.metadata
        url = metadata.get("repo_url") or self.repo_url
        commit = metadata.get("commit") or self.commit
        path = metadata.get("file_path") or self.file_path
        if not (url and commit and path):
            raise StartError(
                f"problem {problem.id!r}: lean-dojo needs a traced repository: set repo_url, "
                "commit and file_path (problem metadata or the environment's options)"
            )
        try:
            full_name = metadata.get("full_name") or theorem_name(
                str(metadata.get("formal_statement", ""))
            )
        except ValueError as exc:
            raise StartError(f"problem {problem.id!r}: {exc}") from None
        lean_dojo = self._dojo
        try:
            theorem = lean_dojo.Theorem(lean_dojo.LeanGitRepo(url, commit), path, full_name)
            dojo = lean_dojo.Dojo(theorem, **self.dojo_kwargs)
            entered, initial = dojo.__enter__()
        except Exception as exc:  # DojoInitError, a missing trace, a crashed container
            raise StartError(f"lean-dojo could not open {full_name}: {exc}") from exc
        self._open[problem.id] = (dojo, entered)
        return TacticState((str(initial.pp),), (), initial)

    def run_tactic(self, problem: Problem, state: TacticState, tactic: str) -> TacticOutcome:
        _, dojo = self._open[problem.id]
        path = (*state.tactics, tactic)
        try:
            result = dojo.run_tac(state.handle, tactic)
        except Exception as exc:  # DojoCrashError, DojoTacticTimeoutError, DojoHardTimeoutError
            return TacticOutcome("error", message=f"lean-dojo failed: {type(exc).__name__}: {exc}")
        kind = type(result).__name__
        if kind == "ProofFinished":
            return TacticOutcome("proved", TacticState((), path, result))
        if kind == "TacticState":
            return TacticOutcome("open", TacticState((str(result.pp),), path, result))
        if kind == "ProofGivenUp":
            return TacticOutcome("error", message="the proof gave up (it uses `sorry`)")
        error = getattr(result, "error", None)
        return TacticOutcome("error", message=str(error) if error is not None else kind)

    def finish(self, problem: Problem) -> None:
        opened = self._open.pop(problem.id, None)
        if opened is not None:
            opened[0].__exit__(None, None, None)

    def close(self) -> None:
        for problem_id in list(self._open):
            dojo, _ = self._open.pop(problem_id)
            dojo.__exit__(None, None, None)
