"""Tactic environments: where a search runs one tactic on one proof state.

Two interchangeable implementations behind `TacticEnvironment`:

- `LeanReplEnvironment`: the leanprover-community REPL's tactic mode. The theorem is sent with
  `sorry` as its proof; the REPL answers with a `proofState` id for the sorry, and each
  `{"tactic": t, "proofState": n}` gives a new id and the remaining goals (README, "Tactic
  mode"; `REPL/Main.lean` `runProofStep`): `{"proofState": m, "goals": [...]}`, with
  `messages`, `sorries` and, in newer versions, `proofStatus` ("Completed", "Incomplete: ...",
  "Error: ..."); a tactic that throws is answered `{"message": "Lean error:\\n..."}`.
  Proof states live in one REPL process, so a problem stays on one REPL; a REPL killed for a
  timeout loses them, and a state is then rebuilt by replaying its tactic path from the root.
- `DojoEnvironment` (`reasoner.strategies.lean.dojo`): lean-dojo's `Dojo` / `run_tac`, for
  theorems in repositories already traced with it.

Both say `proved` only when no goal is left; the strategy still has the Lean verifier check the
assembled proof (axioms included) before it counts.
"""

from __future__ import annotations

import json
import os
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reasoner.tools.process import Timeout
from reasoner.types import Problem
from reasoner.verifiers.lean.protocol import ReplResponse
from reasoner.verifiers.lean.repl import LeanRepl, LeanReplError
from reasoner.verifiers.lean.source import DEFAULT_HEADER, split_header
from reasoner.verifiers.lean.verifier import INSTALL_INSTRUCTIONS, repl_command

_TRAILING_SORRY = re.compile(r"\s*sorry\s*$")


class EnvironmentUnavailable(RuntimeError):
    """No Lean (or no lean-dojo) here; the message says how to install it."""


class StartError(RuntimeError):
    """The theorem could not be opened (its statement does not elaborate, say)."""


@dataclass(frozen=True)
class TacticState:
    """One proof state: its goals as Lean prints them, the tactics that led to it from the
    root, and the environment's own handle for it."""

    goals: tuple[str, ...]
    tactics: tuple[str, ...] = ()
    handle: Any = field(default=None, compare=False)

    @property
    def pp(self) -> str:
        return "\n\n".join(self.goals)


@dataclass(frozen=True)
class TacticOutcome:
    status: Literal["open", "proved", "error"]
    state: TacticState | None = None
    message: str = ""


class TacticEnvironment(ABC):
    #: problems whose tactics may run at once (one thread each)
    max_concurrency: int = 1

    @abstractmethod
    def start(self, problem: Problem) -> TacticState:
        """The root state. Raises EnvironmentUnavailable or StartError."""

    @abstractmethod
    def run_tactic(self, problem: Problem, state: TacticState, tactic: str) -> TacticOutcome:
        """Never raises for a failing tactic: that is an `error` outcome."""

    def finish(self, problem: Problem) -> None:  # noqa: B027 - optional hook
        """The search of `problem` is over; release what it holds."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release processes."""


def statement_with_sorry(formal_statement: str) -> str:
    """The statement with `sorry` as its proof: miniF2F's end in `:= by`, ProofNet's in `:=`."""
    statement = _TRAILING_SORRY.sub("", formal_statement.rstrip()).rstrip()
    if re.search(r"\bby$", statement):
        return f"{statement}\n  sorry"
    if statement.endswith(":="):
        return f"{statement} by\n  sorry"
    raise ValueError("the formal statement must end with `:=` or `:= by`")


def encode_tactic(tactic: str, proof_state: int) -> bytes:
    payload = {"tactic": tactic, "proofState": proof_state}
    return (json.dumps(payload, ensure_ascii=False) + "\n\n").encode("utf-8")


class TacticRepl(LeanRepl):
    """A LeanRepl that also speaks tactic mode, and can append every request and response to a
    JSONL file (`record_to`): run once where Lean is installed, that file is a transcript the
    replaying fake in the tests can serve."""

    def __init__(self, *args: Any, record_to: str | os.PathLike[str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.record_to = Path(record_to) if record_to is not None else None
        self._record_lock = threading.Lock()

    def run(self, cmd: str, env: int | None = None, timeout_s: float | None = None) -> ReplResponse:
        response = super().run(cmd, env, timeout_s)
        self._record({"cmd": cmd, **({"env": env} if env is not None else {})}, response)
        return response

    def header_env(self, imports: str) -> int:
        cached = self.has_header(imports)
        env = super().header_env(imports)
        if not cached:
            self._record({"cmd": imports}, ReplResponse(env=env, raw={"env": env}))
        return env

    def run_tactic(
        self, tactic: str, proof_state: int, timeout_s: float | None = None
    ) -> ReplResponse:
        response = self.request(encode_tactic(tactic, proof_state), timeout_s)
        self._record({"tactic": tactic, "proofState": proof_state}, response)
        return response

    def _record(self, request: dict[str, Any], response: ReplResponse) -> None:
        if self.record_to is None:
            return
        line = json.dumps({"request": request, "response": response.raw}, ensure_ascii=False)
        with self._record_lock, self.record_to.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def tactic_outcome(response: ReplResponse, tactics: tuple[str, ...], handle: Any) -> TacticOutcome:
    """A tactic-mode response as an outcome. Errors in `messages` fail the tactic even when the
    REPL returned a state (Lean recovers from some elaboration errors), and so does a `sorry`
    the tactic introduced, and a `proofStatus` other than Completed when no goal is left."""
    if response.repl_error is not None:
        return TacticOutcome("error", message=response.repl_error.removeprefix("Lean error:\n"))
    if response.errors:
        return TacticOutcome("error", message=response.errors[0].data)
    if response.sorries:
        return TacticOutcome("error", message="the tactic left a `sorry`")
    goals, proof_state = response.raw.get("goals"), response.raw.get("proofState")
    if not isinstance(goals, list) or not isinstance(proof_state, int):
        return TacticOutcome("error", message=f"unexpected REPL response: {response.raw}")
    if not goals:
        status = response.raw.get("proofStatus")
        if isinstance(status, str) and not status.startswith("Completed"):
            return TacticOutcome("error", message=f"no goals left, but the REPL says: {status}")
        return TacticOutcome("proved", TacticState((), tactics, handle))
    return TacticOutcome("open", TacticState(tuple(str(g) for g in goals), tactics, handle))


@dataclass
class _Opened:
    """A problem's place in the REPLs: which REPL, and its root proof state in which process."""

    repl: int
    statement: str
    imports: str
    preamble: str
    starts: int = -1
    root: int = -1


class LeanReplEnvironment(TacticEnvironment):
    """Tactic mode of the REPL processes also used by the Lean verifier (same resolution:
    `REASONER_LEAN_PROJECT` / `REASONER_LEAN_REPL`, or an explicit `command`). `workers` REPLs,
    each problem pinned to one of them, problems on different REPLs in parallel.

    A handle is `(process start count, proofState id)`: after a REPL restart the ids are stale,
    and the state is rebuilt by replaying its tactics from a fresh root.
    """

    def __init__(
        self,
        project_dir: str | os.PathLike[str] | None = None,
        repl_path: str | os.PathLike[str] | None = None,
        *,
        command: list[str] | None = None,
        workers: int = 1,
        timeout_s: float = 60.0,
        import_timeout_s: float = 600.0,
        memory_limit_mb: int | None = 32768,
        record_to: str | os.PathLike[str] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.unavailable: str | None = None
        self.repls: list[TacticRepl] = []
        resolved: tuple[list[str], Path | None] | str
        if command is not None:
            resolved = (list(command), Path(project_dir) if project_dir is not None else None)
        else:
            resolved = repl_command(project_dir, repl_path)
        if isinstance(resolved, str):
            self.unavailable = resolved
            return
        self.max_concurrency = workers
        self.repls = [
            TacticRepl(
                resolved[0],
                resolved[1],
                timeout_s=timeout_s,
                import_timeout_s=import_timeout_s,
                memory_limit_mb=memory_limit_mb,
                record_to=record_to,
            )
            for _ in range(workers)
        ]
        self._opened: dict[str, _Opened] = {}
        self._lock = threading.Lock()

    def start(self, problem: Problem) -> TacticState:
        if self.unavailable is not None:
            raise EnvironmentUnavailable(
                f"Lean is not available: {self.unavailable}.\n\n{INSTALL_INSTRUCTIONS}"
            )
        statement = problem.metadata.get("formal_statement")
        if not isinstance(statement, str) or not statement.strip():
            raise StartError(f"problem {problem.id!r} has no formal_statement")
        try:
            with_sorry = statement_with_sorry(statement)
        except ValueError as exc:
            raise StartError(f"problem {problem.id!r}: {exc}") from None
        imports, preamble = split_header(problem.metadata.get("header") or DEFAULT_HEADER)
        with self._lock:
            slot = len(self._opened) % len(self.repls)
            opened = _Opened(slot, with_sorry, imports, preamble)
            self._opened[problem.id] = opened
        goal = self._open_root(opened)
        return TacticState((goal,), (), (opened.starts, opened.root))

    def _open_root(self, opened: _Opened) -> str:
        repl = self.repls[opened.repl]
        cmd = f"{opened.preamble}\n\n{opened.statement}" if opened.preamble else opened.statement
        try:
            env = repl.header_env(opened.imports)
            response = repl.run(cmd, env, self.timeout_s)
        except LeanReplError as exc:
            raise StartError(f"the Lean REPL could not open the theorem: {exc}") from exc
        if response.repl_error is not None or response.errors:
            detail = response.repl_error or response.errors[0].data
            raise StartError(f"the statement does not elaborate: {detail}")
        sorries = [s for s in response.sorries if isinstance(s.get("proofState"), int)]
        if not sorries:
            raise StartError("the REPL returned no proof state for the statement's `sorry`")
        opened.starts, opened.root = repl.starts, int(sorries[0]["proofState"])
        return str(sorries[0].get("goal", ""))

    def run_tactic(self, problem: Problem, state: TacticState, tactic: str) -> TacticOutcome:
        opened = self._opened[problem.id]
        repl = self.repls[opened.repl]
        path = (*state.tactics, tactic)
        try:
            proof_state = self._live(opened, state)
            if proof_state is None:
                return TacticOutcome("error", message="could not rebuild the proof state")
            response = repl.run_tactic(tactic, proof_state, self.timeout_s)
        except Timeout as exc:
            return TacticOutcome("error", message=f"timeout: {exc}")
        except (LeanReplError, StartError) as exc:
            return TacticOutcome("error", message=f"the Lean REPL failed: {exc}")
        handle = (repl.starts, response.raw.get("proofState"))
        return tactic_outcome(response, path, handle)

    def _live(self, opened: _Opened, state: TacticState) -> int | None:
        """The state's proofState id in the REPL's current process, replaying its tactics from
        a fresh root when the process has been restarted since the id was given."""
        repl = self.repls[opened.repl]
        starts, proof_state = state.handle
        if starts == repl.starts and repl.pid is not None:
            return int(proof_state)
        if opened.starts != repl.starts or repl.pid is None:
            self._open_root(opened)
        current = opened.root
        for tactic in state.tactics:
            response = repl.run_tactic(tactic, current, self.timeout_s)
            following = response.raw.get("proofState")
            if tactic_outcome(response, (), None).status == "error" or not isinstance(
                following, int
            ):
                return None
            current = following
        return current

    def close(self) -> None:
        for repl in self.repls:
            repl.close()
