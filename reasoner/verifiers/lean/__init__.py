"""Lean 4 proof checking through the leanprover-community REPL (an optional backend)."""

from __future__ import annotations

from reasoner.verifiers.lean.repl import LeanRepl, LeanReplPool
from reasoner.verifiers.lean.verifier import INSTALL_INSTRUCTIONS, LeanVerifier

__all__ = ["INSTALL_INSTRUCTIONS", "LeanRepl", "LeanReplPool", "LeanVerifier"]
