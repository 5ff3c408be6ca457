"""Lean 4 proof checking (miniF2F, ProofNet) through the leanprover-community REPL.

Lean and Mathlib are an optional backend: nothing is installed with the package, and without
them every verdict is an `error` that says how to install them, so a missing prover is never
counted as a wrong proof.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoner.types import Completion, Problem, Verdict
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.lean.protocol import ReplResponse, parse_axioms
from reasoner.verifiers.lean.repl import LeanReplError, LeanReplPool
from reasoner.verifiers.lean.source import (
    DEFAULT_HEADER,
    LeanSource,
    SourceError,
    build_source,
    split_header,
)

PROJECT_ENV = "REASONER_LEAN_PROJECT"
REPL_ENV = "REASONER_LEAN_REPL"

# Lean's standard axioms; anything else a proof depends on (sorryAx, a user `axiom`) fails it.
STANDARD_AXIOMS = frozenset({"propext", "Classical.choice", "Quot.sound"})
# What `native_decide` adds: the compiler is trusted instead of the kernel.
NATIVE_DECIDE_AXIOMS = frozenset({"Lean.ofReduceBool", "Lean.trustCompiler"})

INSTALL_INSTRUCTIONS = """\
The Lean verifier needs Lean 4, a Mathlib project and the leanprover-community REPL, all on
the same Lean version (the REPL's and Mathlib's tags are named after it, e.g. v4.15.0):

1. Install elan, the Lean toolchain manager, and put it on PATH:
     curl https://raw.githubusercontent.com/leanprover/elan/master/elan-init.sh -sSf \\
       | sh -s -- -y --default-toolchain none
     source ~/.elan/env
2. Get Mathlib with its prebuilt .olean files (about 5 GB):
     git clone https://github.com/leanprover-community/mathlib4 ~/lean/mathlib4
     cd ~/lean/mathlib4 && git checkout v4.15.0 && lake exe cache get
3. Build the REPL at the same version (cat lean-toolchain must match in both):
     git clone https://github.com/leanprover-community/repl ~/lean/repl
     cd ~/lean/repl && git checkout v4.15.0 && lake build
4. Point reasoner at them:
     export REASONER_LEAN_PROJECT=~/lean/mathlib4
     export REASONER_LEAN_REPL=~/lean/repl/.lake/build/bin/repl
   The verifier runs `lake env $REASONER_LEAN_REPL` in $REASONER_LEAN_PROJECT, so the REPL
   sees Mathlib. Check it by hand: echo '{"cmd": "import Mathlib"}' | lake env \\
   $REASONER_LEAN_REPL (run in the Mathlib folder) prints {"env": 0}.
   Alternatively pass LeanVerifier(command=[...], project_dir=...) with any command that
   speaks the REPL protocol.
"""


def repl_command(
    project_dir: str | os.PathLike[str] | None, repl_path: str | os.PathLike[str] | None
) -> tuple[list[str], Path] | str:
    """The command and folder to run the REPL in, or why there is none."""
    project = project_dir or os.environ.get(PROJECT_ENV)
    repl = repl_path or os.environ.get(REPL_ENV)
    if shutil.which("lake") is None:
        return "`lake` is not on PATH"
    if not project:
        return f"no Mathlib project given (set {PROJECT_ENV})"
    if not repl:
        return f"no REPL binary given (set {REPL_ENV})"
    if not Path(project).expanduser().is_dir():
        return f"the Mathlib project {project} is not a folder"
    if not Path(repl).expanduser().is_file():
        return f"the REPL binary {repl} does not exist (build it with `lake build`)"
    return ["lake", "env", str(Path(repl).expanduser())], Path(project).expanduser()


def first_error_feedback(response: ReplResponse, line_offset: int) -> str | None:
    errors = response.errors
    if not errors:
        return None
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return errors[0].describe(line_offset) + more


def judge(
    source: LeanSource,
    proof: ReplResponse,
    axioms_response: ReplResponse | None,
    *,
    line_offset: int = 0,
    allow_native_decide: bool = False,
) -> Verdict:
    """The decision, apart from the REPL so recorded responses can drive it. A missing axioms
    response means the proof was not clean enough to ask."""
    details: dict[str, Any] = {"mode": source.mode, "theorem": source.theorem_name}
    if proof.repl_error is not None:
        return Verdict("error", 0.0, f"the Lean REPL refused the command: {proof.repl_error}")
    feedback = first_error_feedback(proof, line_offset)
    if feedback is not None:
        details["errors"] = [m.describe(line_offset) for m in proof.errors]
        return Verdict("incorrect", 0.0, feedback, None, details)
    if proof.sorries:
        where = proof.sorries[0].get("pos") or {}
        at = f"{where.get('line', 0) - line_offset}:{where.get('column', 0)}"
        return Verdict("incorrect", 0.0, f"{at}: the proof uses `sorry`", None, details)
    if axioms_response is None:
        return Verdict("error", 0.0, "the axiom check was not run", None, details)
    axioms = parse_axioms(axioms_response, source.theorem_name)
    if axioms is None:
        feedback = f"`{source.theorem_name}` was not declared by the proof"
        return Verdict("incorrect", 0.0, feedback, None, details)
    details["axioms"] = axioms
    allowed = STANDARD_AXIOMS | (NATIVE_DECIDE_AXIOMS if allow_native_decide else frozenset())
    bad = [a for a in axioms if a not in allowed]
    if bad:
        if "sorryAx" in bad:
            reason = "the proof uses `sorry`"
        elif set(bad) <= NATIVE_DECIDE_AXIOMS:
            reason = "`native_decide` is not allowed (it trusts the compiler, not the kernel)"
        else:
            reason = f"the proof depends on non-standard axioms: {', '.join(bad)}"
        return Verdict("incorrect", 0.0, reason, None, details)
    return Verdict("correct", 1.0, "Lean accepted the proof", None, details)


class LeanVerifier(Verifier):
    """Checks a Lean 4 proof of `problem.metadata["formal_statement"]`, under
    `metadata["header"]` (default: Mathlib, Aesop and the miniF2F opens). The completion's
    format is described in `reasoner.verifiers.lean.source`. Feedback on a failed proof is
    Lean's first error as `line:col: error: message`, lines counted from the theorem's first
    line. A REPL timeout or crash, or no Lean installed, is an `error` verdict.
    """

    name = "lean"
    #: a proof is checked against the statement, which is the question, not a key
    reads_gold = False

    def __init__(
        self,
        project_dir: str | os.PathLike[str] | None = None,
        repl_path: str | os.PathLike[str] | None = None,
        *,
        command: Sequence[str] | None = None,
        workers: int = 1,
        timeout_s: float = 60.0,
        import_timeout_s: float = 600.0,
        memory_limit_mb: int | None = 32768,
        allow_native_decide: bool = False,
    ) -> None:
        self.allow_native_decide = allow_native_decide
        self.timeout_s = timeout_s
        self.max_concurrency = workers
        self._unavailable: str | None = None
        self._pool: LeanReplPool | None = None
        if command is not None:
            resolved: tuple[list[str], Path | None] | str = (list(command), None)
            if project_dir is not None:
                resolved = (list(command), Path(project_dir))
        else:
            resolved = repl_command(project_dir, repl_path)
        if isinstance(resolved, str):
            self._unavailable = resolved
            return
        self._pool = LeanReplPool(
            workers,
            resolved[0],
            resolved[1],
            timeout_s=timeout_s,
            import_timeout_s=import_timeout_s,
            memory_limit_mb=memory_limit_mb,
        )

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        if self._pool is None:
            feedback = f"Lean is not available: {self._unavailable}.\n\n{INSTALL_INSTRUCTIONS}"
            return Verdict("error", 0.0, feedback)
        statement = problem.metadata.get("formal_statement")
        if not isinstance(statement, str) or not statement.strip():
            return Verdict("error", 0.0, f"problem {problem.id!r} has no formal_statement")
        try:
            source = build_source(statement, completion.text)
        except SourceError as exc:
            return Verdict("incorrect", 0.0, str(exc))
        except ValueError as exc:  # the statement itself is unusable
            return Verdict("error", 0.0, f"problem {problem.id!r}: {exc}")
        imports, preamble = split_header(problem.metadata.get("header") or DEFAULT_HEADER)
        cmd = f"{preamble}\n\n{source.code}" if preamble else source.code
        line_offset = cmd.count("\n") - source.code.count("\n")
        try:
            with self._pool.acquire(imports) as repl:
                proof = repl.run_with_imports(imports, cmd, self.timeout_s)
                axioms = None
                if proof.env is not None and not proof.errors and not proof.sorries:
                    query = f"#print axioms {source.theorem_name}"
                    axioms = repl.run(query, env=proof.env, timeout_s=self.timeout_s)
        except LeanReplError as exc:
            return Verdict("error", 0.0, f"Lean verifier failed: {exc}")
        return judge(
            source,
            proof,
            axioms,
            line_offset=line_offset,
            allow_native_decide=self.allow_native_decide,
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
