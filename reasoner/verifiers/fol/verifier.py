"""The `fol` verifier: FOLIO-style problems, answered either with a label or with a formalisation.

A completion is read in one of two ways:

(a) NL->FOL: it formalises the problem, and the prover derives the label from that. The block is
    the last `Premises:` header followed by a `Conclusion:` header, one formula per line:

        Premises:
        1. ∀x (Drinks(x) → Dependent(x))   ::: optional comment, as in Logic-LM
        - Drinks(rina) ∨ Jokes(rina)
        Conclusion:
        Dependent(rina)

    Headers are case-insensitive and may carry markdown (`**Premises:**`); a formula may sit on
    the header's own line; list markers (`1.`, `1)`, `-`, `*`, `•`) and code fences are ignored.
    A block with no formula in it (no connective, no `Name(`) is a restated problem, not (a).
(b) Otherwise it is a label answer: True / False / Uncertain (FOLIO train's "Unknown" too), or
    Logic-LM's options A = True, B = False, C = Uncertain.

The gold label is `problem.answer`; a problem without one is labelled from its own formulas in
`metadata["premises_fol"]` / `metadata["conclusion_fol"]`. A formalisation that does not parse,
times out or contradicts itself is a Verdict of `error` whose feedback says what to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reasoner.types import Completion, Problem, Verdict, VerdictStatus
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.fol.provers import (
    Decision,
    Label,
    ProverName,
    ProverUnavailable,
    decide,
)

_LABELS: dict[str, Label] = {
    "true": "True",
    "false": "False",
    "uncertain": "Uncertain",
    "unknown": "Uncertain",
    "a": "True",
    "b": "False",
    "c": "Uncertain",
}
_HEADER = re.compile(r"^[\s#*_>]*(premises?|conclusions?)[\s*_]*[:：][\s*_]*(.*?)[\s*_]*$", re.I)
# A restated problem in prose ("Premises: All people who ...") is not a formalisation.
_FORMAL = re.compile(r"[∀∃¬∧∨⊕→↔]|\w\(")
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_ANSWER_CUE = re.compile(
    r"\b(?:answer|option|label)\b(?:\s+is)?\s*[:：]?\s*[(*\s]*"
    r"\b(true|false|uncertain|unknown|[ABC])\b",
    re.I,
)
_LABEL_WORD = re.compile(r"\b(true|false|uncertain|unknown)\b", re.I)
_BARE_OPTION = re.compile(r"^[\s(*]*([ABC])[\s).*]*$")


def normalize_label(text: str | None) -> Label | None:
    """FOLIO validation says Uncertain, train says Unknown; Logic-LM answers with A/B/C."""
    if text is None:
        return None
    return _LABELS.get(text.strip().strip(".*()").lower())


def extract_label(text: str) -> Label | None:
    """The last explicit answer ("the answer is B", "Answer: Uncertain"), else the last label
    word, else a bare option letter. A lone `a` is an article, so letters must be capitals."""
    for match in reversed(list(_ANSWER_CUE.finditer(text))):
        word = match.group(1)
        if len(word) > 1 or word.isupper():
            return normalize_label(word)
    words = _LABEL_WORD.findall(text)
    if words:
        return normalize_label(words[-1])
    bare = _BARE_OPTION.match(text)
    return normalize_label(bare.group(1)) if bare else None


@dataclass(frozen=True)
class Formalisation:
    premises: list[str]
    conclusion: str


def extract_formalisation(text: str) -> Formalisation | None:
    """The last `Premises:` block that a `Conclusion:` follows, or None (then it is mode b)."""
    lines = text.splitlines()
    headers = [(i, m) for i, line in enumerate(lines) if (m := _HEADER.match(line))]
    for pos in range(len(headers) - 2, -1, -1):
        start, premises_header = headers[pos]
        end, conclusion_header = headers[pos + 1]
        if not premises_header.group(1).lower().startswith("premise"):
            continue
        if not conclusion_header.group(1).lower().startswith("conclusion"):
            continue
        premises = _formula_lines([premises_header.group(2), *lines[start + 1 : end]])
        following = _formula_lines([conclusion_header.group(2), *lines[end + 1 :]])
        if following and any(_FORMAL.search(f) for f in (*premises, following[0])):
            return Formalisation(premises, following[0])
    return None


def _formula_lines(lines: list[str]) -> list[str]:
    formulas = []
    for line in lines:
        formula = _LIST_MARKER.sub("", line.split(":::", 1)[0]).strip()
        if formula and not formula.startswith("```"):
            formulas.append(formula)
    return formulas


_DERIVATION = {
    "True": "the premises prove the conclusion (True)",
    "False": "the premises prove the negation of the conclusion (False)",
    "Uncertain": "neither the conclusion nor its negation follows from the premises (Uncertain)",
}


class FOLVerifier(Verifier):
    name = "fol"
    timeout_s: float

    def __init__(self, prover: ProverName = "e", timeout_s: float = 10.0) -> None:
        self.prover: ProverName = prover
        self.timeout_s = timeout_s

    def extract_answer(self, text: str) -> str | None:
        """The label alone: without a gold label there is nothing to prove a formalisation
        against."""
        return extract_label(text)

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        try:
            return self._verify(problem, completion)
        except ProverUnavailable as exc:
            return Verdict("error", 0.0, str(exc), details={"error": "prover_error"})
        except Exception as exc:  # a verifier bug is an error verdict, not a crash
            return Verdict("error", 0.0, f"fol verifier failed: {exc!r}")

    def _verify(self, problem: Problem, completion: Completion) -> Verdict:
        gold, gold_error = self._gold(problem)
        if gold is None:
            return Verdict("error", 0.0, gold_error, details={"error": "no_gold"})
        details: dict[str, Any] = {"gold": gold}
        formalisation = extract_formalisation(completion.text)
        if formalisation is None:
            details["mode"] = "label"
            label = extract_label(completion.text)
            if label is None:
                return Verdict("incorrect", 0.0, "no answer found", None, details)
            ok = label == gold
            feedback = f"expected {gold}, got {label}"
            return Verdict(_status(ok), float(ok), feedback, label, details)

        details["mode"] = "fol"
        decision = decide(
            formalisation.premises, formalisation.conclusion, self.prover, self.timeout_s
        )
        details["decision"] = decision.to_dict()
        if decision.label is None:
            details["error"] = decision.error
            return Verdict("error", 0.0, _error_feedback(decision, self.timeout_s), None, details)
        ok = decision.label == gold
        feedback = f"{_DERIVATION[decision.label]}; expected {gold}"
        return Verdict(_status(ok), float(ok), feedback, decision.label, details)

    def _gold(self, problem: Problem) -> tuple[Label | None, str]:
        if problem.answer is not None and problem.answer.strip():
            gold = normalize_label(problem.answer)
            if gold is None:
                known = "True, False, Uncertain or Unknown"
                return None, f"gold label {problem.answer!r} of {problem.id!r} is not {known}"
            return gold, ""
        premises = problem.metadata.get("premises_fol")
        conclusion = problem.metadata.get("conclusion_fol")
        if not premises or not conclusion:
            return None, f"problem {problem.id!r} has neither a gold label nor gold formulas"
        decision = decide(list(premises), str(conclusion), self.prover, self.timeout_s)
        if decision.label is None:
            return None, f"gold formulas of problem {problem.id!r}: {decision.message}"
        return decision.label, ""

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        label = normalize_label(a)
        return label is not None and label == normalize_label(b)


def _status(ok: bool) -> VerdictStatus:
    return "correct" if ok else "incorrect"


def _error_feedback(decision: Decision, timeout_s: float) -> str:
    if decision.error == "parse_error":
        return f"your formalisation does not parse: {decision.message}"
    if decision.error == "inconsistent_premises":
        return "your premises contradict each other, so they prove anything; fix the formalisation"
    if decision.error == "timeout":
        return (
            f"the prover found no proof of the conclusion or its negation within {timeout_s:g}s; "
            "a simpler formalisation may help"
        )
    return f"the prover failed: {decision.message}"
