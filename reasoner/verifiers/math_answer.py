"""Final-answer checking for math benchmarks (GSM8K, MATH, AIME-style).

Extraction is plain string work done here; equivalence is math-verify's, run in an isolated
worker because sympy can take unbounded time and math-verify's own timeouts (signal.alarm) fail
off the main thread.
"""

from __future__ import annotations

import re
from typing import Any

from reasoner.types import Completion, Problem, Verdict, VerdictStatus
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.isolation import VerifierTimeout, WorkerPool

_THINK_TAG = re.compile(r"</?think>")
# `\\\\` is consumed first so the brace after a LaTeX line break is not read as escaped.
_BRACE_TOKEN = re.compile(r"\\\\|\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")
# No tail in the pattern: a greedy tail would swallow a later "the answer is" on the same line.
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b[\s:]*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s)")
_NUM = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER = re.compile(rf"(?<![\w.])-?{_NUM}(?:/\d+)?")
_PLAIN_NUMBER = re.compile(rf"(?:\\?\$)?-?(?:\\?\$)?{_NUM}\.?")
# "18 dollars" -> 18, but "2 and 3" is a list.
_NUMBER_THEN_WORDS = re.compile(rf"((?:\\?\$)?-?{_NUM})\s+(?!(?:and|or)\b)[A-Za-z]{{2,}}")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def extract_answer(text: str) -> str | None:
    """The model's final answer: last box, then `####`, then "the answer is", then last number."""
    text = _strip_reasoning(text)
    for find in (_last_boxed, _last_gsm8k, _last_answer_is, _last_number):
        answer = find(text)
        if answer:
            return answer
    return None


def _strip_reasoning(text: str) -> str:
    """Numbers in the reasoning are scratch work, and an unclosed block never reached an answer."""
    kept: list[str] = []
    pos, inside = 0, False
    for tag in _THINK_TAG.finditer(text):
        if tag.group() == "<think>":
            if not inside:
                kept.append(text[pos : tag.start()])
                inside = True
            continue
        if not inside:  # a close with no open: everything so far was thought
            kept = []
        inside, pos = False, tag.end()
    if not inside:
        kept.append(text[pos:])
    return "".join(kept)


def _last_boxed(text: str) -> str | None:
    """One pass with a brace stack, so nested and unclosed boxes cost linear time."""
    stack: list[int | None] = []  # content start for a box, None for a plain brace
    last_start, last = -1, None
    for token in _BRACE_TOKEN.finditer(text):
        tok = token.group()
        if tok.endswith("{") and not tok.startswith("\\{"):
            stack.append(token.end() if len(tok) > 1 else None)
        elif tok == "}" and stack:
            start = stack.pop()
            content = text[start : token.start()].strip() if start is not None else ""
            if content and start is not None and start > last_start:
                last_start, last = start, content
    return _tidy_number(last) if last is not None else None


def _last_gsm8k(text: str) -> str | None:
    matches = _GSM8K.findall(text)
    return _clean(matches[-1]) if matches else None


def _last_answer_is(text: str) -> str | None:
    for match in reversed(list(_ANSWER_IS.finditer(text))):
        line_end = text.find("\n", match.end())
        rest = text[match.end() : line_end if line_end != -1 else len(text)]
        phrase = _SENTENCE_END.split(rest, maxsplit=1)[0]
        answer = _clean(phrase)
        if answer:
            return answer
    return None


def _last_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    return _tidy_number(matches[-1]) if matches else None


def _clean(phrase: str) -> str:
    """Strips the wrapping models put around an answer: markdown bold, math delimiters, a period."""
    answer = phrase
    for _ in range(2):  # the wrappings nest either way round: **$18$.** and $**18**$.
        answer = _unwrap_math(answer.strip().strip("*").rstrip(".").strip())
    units = _NUMBER_THEN_WORDS.match(answer)
    return _tidy_number(units.group(1) if units else answer)


def _unwrap_math(answer: str) -> str:
    for left, right in _MATH_DELIMITERS:
        if (
            len(answer) > len(left) + len(right)
            and answer.startswith(left)
            and answer.endswith(right)
        ):
            return answer[len(left) : -len(right)].strip()
    return answer


def _tidy_number(answer: str) -> str:
    """`$1,234.` -> `1234`: currency, thousands separators and a full stop are not the number."""
    if not _PLAIN_NUMBER.fullmatch(answer):
        return answer
    return answer.replace("\\$", "").replace("$", "").replace(",", "").rstrip(".")


def _normalize(answer: str) -> str:
    """Cheap canonical form for the exact-match shortcut; anything subtler is math-verify's."""
    compact = _tidy_number("".join(answer.split()))
    if re.fullmatch(r"-?\d+\.\d*", compact):
        compact = compact.rstrip("0").rstrip(".")
    return "0" if compact == "-0" else compact


# Everything below runs inside the worker process.


def _warm_up() -> None:
    """Pay math-verify's import and first-parse cost at worker start, not inside a call's timeout,
    and silence its warning that timeouts are off: they are enforced by the worker's parent."""
    import logging

    import math_verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    math_verify.parse("$1$", parsing_timeout=None)


def _parse(answer: str) -> list[Any]:
    """math-verify only parses delimited LaTeX; `\\boxed{}` takes anything an answer holds,
    `$` signs and commas included. `$...$` is deliberately not tried as a fallback: where the box
    fails it parses a prefix instead (`$0.\\overline{3}$` -> 0), which would pass a wrong answer.
    A trailing period is dropped since it alone makes the box fail (`18.`)."""
    import math_verify

    boxed = f"\\boxed{{{answer.strip().rstrip('.')}}}"
    return list(math_verify.parse(boxed, parsing_timeout=None))


def _has_expression(parsed: list[Any]) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _check_answer(gold: str, predicted: str) -> bool | None:
    """Whether `predicted` matches `gold`; None when the gold itself does not parse."""
    import math_verify

    gold_parsed = _parse(gold)
    if not _has_expression(gold_parsed):
        return None
    return bool(math_verify.verify(gold_parsed, _parse(predicted), timeout_seconds=None))


def _same_answer(a: str, b: str) -> bool:
    """Either direction: math-verify's check is asymmetric (`x = 3` as gold accepts `3`)."""
    import math_verify

    pa, pb = _parse(a), _parse(b)
    return bool(
        math_verify.verify(pa, pb, timeout_seconds=None)
        or math_verify.verify(pb, pa, timeout_seconds=None)
    )


class MathAnswerVerifier(Verifier):
    name = "math"

    def __init__(self, timeout_s: float = 10.0, workers: int = 2) -> None:
        self.timeout_s = timeout_s
        self.max_concurrency = workers
        self._pool = WorkerPool(workers, initializer=_warm_up)
        # Module-level functions run in the worker; tests swap in a hanging one.
        self._check = _check_answer
        self._same = _same_answer

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        gold = problem.answer
        if gold is None or not gold.strip():
            return Verdict("error", 0.0, feedback=f"problem {problem.id!r} has no gold answer")
        try:
            predicted = extract_answer(completion.text)
        except Exception as exc:  # a verifier bug is an error verdict, not a crash
            return Verdict("error", 0.0, feedback=f"answer extraction failed: {exc!r}")
        details: dict[str, Any] = {"gold": gold, "extracted": predicted}
        if predicted is None:
            return Verdict("incorrect", 0.0, "no answer found", None, details)
        if _normalize(predicted) == _normalize(gold):
            return Verdict("correct", 1.0, f"expected {gold}, got {predicted}", predicted, details)
        try:
            same = self._pool.call(self._check, gold, predicted, timeout=self.timeout_s)
        except VerifierTimeout:
            feedback = f"verifier timed out after {self.timeout_s:g}s"
            return Verdict("error", 0.0, feedback, predicted, details)
        except Exception as exc:  # VerifierCrashed, VerifierFailed, spawn failure
            return Verdict("error", 0.0, f"verifier failed: {exc}", predicted, details)
        if same is None:
            feedback = f"gold answer {gold!r} of problem {problem.id!r} does not parse"
            return Verdict("error", 0.0, feedback, predicted, details)
        status: VerdictStatus = "correct" if same else "incorrect"
        return Verdict(status, float(same), f"expected {gold}, got {predicted}", predicted, details)

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        """Unknown counts as different: a wrong split costs a vote, a wrong merge can pick
        the wrong answer."""
        na, nb = _normalize(a), _normalize(b)
        if na == nb:
            return True
        if _PLAIN_NUMBER.fullmatch(na) and _PLAIN_NUMBER.fullmatch(nb):
            # two plain decimals: no worker round trip needed (votes compare many such pairs)
            return float(na) == float(nb)
        try:
            return bool(self._pool.call(self._same, a, b, timeout=self.timeout_s))
        except Exception:  # a failed check is "not shown equal"
            return False

    def close(self) -> None:
        self._pool.close()
