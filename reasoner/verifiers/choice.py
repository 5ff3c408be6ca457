"""The `choice` verifier: multiple-choice benchmarks (Logic-LM's ProntoQA, ProofWriter,
LogicalDeduction, AR-LSAT) scored on the option letter the completion chose.

The math verifier reads "The answer is (B) The blue book is second." as the whole phrase and
calls it wrong, and the fol verifier knows only A/B/C; an option letter needs neither sympy nor a
prover, only a careful reading of which letter was chosen.
"""

from __future__ import annotations

import re
from typing import Any

from reasoner.types import Completion, Problem, Verdict, VerdictStatus
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.math_answer import _strip_reasoning

# "The answer is (B)", "answer: B", "Option C", "\boxed{D}"; letters must be capitals, since a
# lone "a" is an article.
_CUES = (
    re.compile(
        r"\b(?:answer|option|choice)\b(?:\s+is)?\s*[:：]?\s*[*\s]*\(?([A-Z])\b(?![a-z'])", re.I
    ),
    re.compile(r"\\boxed\{\s*\(?([A-Z])\)?\s*\}"),
)
_BARE = re.compile(r"^[\s(*]*([A-Z])[\s).*]*$")


def extract_choice(text: str) -> str | None:
    """The last cued option letter; else a completion that is only a letter."""
    text = _strip_reasoning(text)
    found: list[tuple[int, str]] = []
    for cue in _CUES:
        found += [(m.start(1), m.group(1)) for m in cue.finditer(text) if m.group(1).isupper()]
    if found:
        return max(found)[1]
    bare = _BARE.match(text)
    return bare.group(1) if bare else None


class ChoiceVerifier(Verifier):
    name = "choice"

    def __init__(self, timeout_s: float = 10.0) -> None:
        """`timeout_s` is the keyword every verifier takes from the CLI; reading a letter is
        instant, so nothing here needs it."""
        self.timeout_s = timeout_s

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        gold = (problem.answer or "").strip().strip("()").upper()
        if len(gold) != 1 or not gold.isalpha():
            return Verdict("error", 0.0, f"gold {problem.answer!r} of {problem.id!r} is no letter")
        chosen = extract_choice(completion.text)
        details: dict[str, Any] = {"gold": gold, "extracted": chosen}
        if chosen is None:
            return Verdict("incorrect", 0.0, "no option letter found", None, details)
        ok = chosen == gold
        status: VerdictStatus = "correct" if ok else "incorrect"
        return Verdict(status, float(ok), f"expected ({gold}), got ({chosen})", chosen, details)

    def extract_answer(self, text: str) -> str | None:
        return extract_choice(text)

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        return a.strip().strip("()").upper() == b.strip().strip("()").upper()
