r"""Final-answer checking for math benchmarks (GSM8K, MATH, AIME-style).

Extraction finds the answer's text in the parent process; parsing and equivalence are
math-verify's, run in an isolated worker because sympy can take unbounded time and math-verify's
own timeouts (signal.alarm) fail off the main thread.

`extract_answer` applies these rules in order; the first that finds an answer wins
(docs/math-answers.md has examples of each):

1. `<think>...</think>` is removed: scratch work is not an answer, and an unclosed block
   never reached one.
2. The final statement: the later of a final-answer sentence ("The final answer is $X$") and
   the last group of boxes. Several boxes joined only by connectives (`,`, `and`, `\quad`,
   `\text{ and }`) are one answer, read as a set: `\boxed{-2} and \boxed{1}` is `-2, 1`.
3. GSM8K's `#### X` line.
4. The last "the answer is X" phrase, up to the end of its sentence.
5. A completion that is one bare expression on one line (`x^2+2x+1`, a program's printed line).
6. math-verify's own extraction regexes for LaTeX and plain expressions, in its priority order
   (rightmost match first), except that a plain number which is a fragment of a larger
   expression (`5` in `x \geq 5`, `6` in `(7, 6)`, `2` in `\frac{1+\sqrt{5}}{2}`) is never taken.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
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
# "Final Answer: The final answer is $X$. I hope it is correct." (the MATH few-shot format) and
# "the final answer to the question is X"; a bare "**Final Answer**" heading is left to the box.
_FINAL_ANSWER = re.compile(
    r"\bfinal\s+answer\b(?:(?:(?!\.\s)[^\n]){0,100}?\bis\b|(?:\*\*)?\s*:)(?:\*\*)?[\s:]*",
    re.IGNORECASE,
)
_I_HOPE = re.compile(r"\s*I hope\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
# Between two boxes of one answer: separators, `and`/`or`, spacing commands, math delimiters,
# a short `\text{...}` without digits (`\text{ and }`, `\text{ for part (a) and }`) and the
# label of the next box (`y_2 =`).
_BOX_CONNECTIVE = re.compile(
    r"(?:[ \t\n,;.&$]|\band\b|\bor\b|\\(?:q?quad|[,;:!]|\(|\)|\[|\])"
    r"|\\(?:text|textrm|mbox)\{[^{}\d]{0,30}\}|[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=)*"
)
_NUM = r"(?:[1-9]\d{0,2}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"  # `0,111` is no thousand
_PLAIN_NUMBER = re.compile(rf"(?:\\?\$)?-?(?:\\?\$)?{_NUM}\.?")
# "18 dollars" -> 18, but "2 and 3" is a list.
_NUMBER_THEN_WORDS = re.compile(rf"((?:\\?\$)?-?{_NUM})\s+(?!(?:and|or)\b)[A-Za-z]{{2,}}")
# "8 hours and 30 minutes", "2 feet, 3 inches": one quantity in two units, not the first number.
_COMPOUND_QUANTITY = re.compile(rf"-?{_NUM}\s+[A-Za-z]+\s*(?:,|and|,\s*and)\s*{_NUM}\s+[A-Za-z]+")
_DIGITS = re.compile(r"\d+")
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_TEXT_ARGUMENT = re.compile(
    r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname|begin|end)\s*\{[^{}]*\}"
)
_WORD = re.compile(r"[A-Za-z]{2,}")
_BARE_MAX_CHARS = 100
_MATH_VERIFY_TAIL_CHARS = 8000
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\b")
_GOLD_AS_TEXT = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed\b")
# Decimals compared to this many places: math-verify's default of 6 passes 0.142857 for 1/7.
_FLOAT_DIGITS = 10
# A plain number that touches one of these is part of a larger expression, not an answer.
_FRAGMENT_BEFORE = frozenset("{([^_<>|/*+-&")
_FRAGMENT_AFTER = frozenset("^_}\\&")
# `1000,99` and `0,111` can only be decimals; `1,2` in a box is a list, `1,234` a thousand.
_DECIMAL_COMMA = re.compile(r"-?(?:0|[1-9]\d{3,}),\d+")
_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")
_MATHRM_LETTER = re.compile(r"\\mathrm\{([A-Za-z])\}")


def extract_answer(text: str) -> str | None:
    """The model's final answer as written (rules in the module docstring), or None."""
    text = _strip_reasoning(text)
    for find in (_final_statement, _last_gsm8k, _last_answer_is, _bare_answer, _math_verify_span):
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


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Outermost closed boxes as (start, end, content), in one pass with a brace stack so
    nested and unclosed boxes cost linear time. `\\boxed{\\boxed{8}}` is the box `8`."""
    stack: list[tuple[int, int] | None] = []  # (box start, content start) for a box
    found: list[tuple[int, int, str]] = []
    for token in _BRACE_TOKEN.finditer(text):
        tok = token.group()
        if tok.endswith("{") and not tok.startswith("\\{"):
            stack.append((token.start(), token.end()) if len(tok) > 1 else None)
        elif tok == "}" and stack:
            opened = stack.pop()
            if opened is None:
                continue
            content = text[opened[1] : token.start()].strip()
            while found and found[-1][0] > opened[0]:  # a box inside this one
                found.pop()
            if content:
                found.append((opened[0], token.end(), content))
    return [(start, end, _innermost(content)) for start, end, content in found]


def _innermost(content: str) -> str:
    inner = _boxes(content) if content.startswith(("\\boxed", "\\fbox")) else []
    if len(inner) == 1 and inner[0][0] == 0 and inner[0][1] == len(content):
        return inner[0][2]
    return content


def _last_box_group(text: str) -> tuple[int, str] | None:
    """The last box and the boxes before it that only connectives separate from it, joined
    as one comma-separated answer (math-verify reads a top-level comma list as a set)."""
    boxes = _boxes(text) if _BOX_OPEN.search(text) else []
    if not boxes:
        return None
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1] : group[0][0]]
        if "\n\n" in gap.strip(" \t") or not _BOX_CONNECTIVE.fullmatch(gap):
            break
        group.insert(0, box)
    contents = list(dict.fromkeys(_tidy_number(content) for _, _, content in group))
    return group[0][0], ", ".join(contents)


def _final_sentence(text: str) -> tuple[int, str] | None:
    """The last final-answer sentence that holds something answer-like."""
    for match in reversed(list(_FINAL_ANSWER.finditer(text))):
        line_end = text.find("\n", match.end())
        rest = text[match.end() : line_end if line_end != -1 else len(text)]
        rest = _I_HOPE.split(rest, maxsplit=1)[0]
        answer = _phrase_answer(_SENTENCE_END.split(rest, maxsplit=1)[0])
        if answer and (re.search(r"[\d$\\]", answer) or len(answer.split()) <= 2):
            return match.start(), answer
    return None


def _final_statement(text: str) -> str | None:
    """A final-answer sentence beats the boxes before it (intermediate results); a box after
    the sentence is a later correction."""
    boxed, sentence = _last_box_group(text), _final_sentence(text)
    if sentence and (boxed is None or boxed[0] < sentence[0]):
        return sentence[1]
    return boxed[1] if boxed else None


def _last_gsm8k(text: str) -> str | None:
    matches = _GSM8K.findall(text)
    return _clean(matches[-1]) if matches else None


def _last_answer_is(text: str) -> str | None:
    for match in reversed(list(_ANSWER_IS.finditer(text))):
        line_end = text.find("\n", match.end())
        rest = text[match.end() : line_end if line_end != -1 else len(text)]
        answer = _phrase_answer(_SENTENCE_END.split(rest, maxsplit=1)[0])
        if answer:
            return answer
    return None


def _phrase_answer(phrase: str) -> str:
    """The answer a final sentence states: its box, else the phrase when it is a bare answer,
    else the one number in a prose phrase ("Jane started 3 hours ago"), else the phrase whole
    (two numbers in prose are not one answer, and the whole phrase will not pass for either)."""
    boxed = _last_box_group(phrase)
    if boxed:
        return boxed[1]
    answer = _clean(phrase)
    if _is_bare(answer) or len(_DIGITS.findall(answer)) != 1:
        return answer
    return _math_verify_span(answer) or answer


def _bare_answer(text: str) -> str | None:
    """A completion that is nothing but an answer (`x^2 + 2*x + 1`, `\\mathrm{E}`, `odd`):
    one short line with no prose words outside LaTeX commands and `\\text{}`."""
    line = text.strip()
    if "\n" in line or len(line) > _BARE_MAX_CHARS or _BOX_OPEN.search(line):
        return None  # an unclosed box is a truncated answer
    return _clean(line) if _is_bare(line) else None


def _is_bare(line: str) -> bool:
    """No prose: no word of two letters or more outside LaTeX commands and their text
    arguments, unless the whole line is one word (`odd`, `Even`)."""
    if not line:
        return False
    words = _WORD.findall(_LATEX_COMMAND.sub(" ", _TEXT_ARGUMENT.sub(" ", line)))
    return not words or (len(words) == 1 and line.isalpha())


def _clean(phrase: str) -> str:
    """Strips the wrapping models put around an answer: markdown bold, math delimiters, a period.
    A number followed by words is the number ("18 dollars", "4 since 2 + 2 = 4"), except a
    quantity in two units: "8 hours and 30 minutes" stays whole, so it cannot pass for 8."""
    answer = phrase
    for _ in range(2):  # the wrappings nest either way round: **$18$.** and $**18**$.
        answer = _unwrap_math(answer.strip().strip("*").rstrip(".").strip())
    units = _NUMBER_THEN_WORDS.match(answer)
    if units and not _COMPOUND_QUANTITY.match(answer):
        answer = units.group(1)
    return _tidy_number(answer)


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
    """`$1,234.` -> `1234`: currency, thousands separators and a full stop are not the number.
    A trailing lone backslash (`185\\`) is a stray escape, not part of the answer."""
    if answer.endswith("\\") and not answer.endswith("\\\\"):
        answer = answer[:-1].rstrip()
    if not _PLAIN_NUMBER.fullmatch(answer):
        return answer
    return answer.replace("\\$", "").replace("$", "").replace(",", "").rstrip(".")


@functools.cache
def _math_verify_patterns() -> list[list[tuple[re.Pattern[str], bool]]]:
    """math-verify's extraction regexes for its default targets, grouped by priority (best
    first); each pattern is flagged True for LaTeX, False for plain expressions."""
    from itertools import groupby

    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from math_verify.parser import get_extraction_regexes

    flagged = [
        (pattern, isinstance(target, LatexExtractionConfig), priority)
        for patterns, target in get_extraction_regexes(
            # boxes are rule 2's; math-verify's box patterns are also slow on unclosed boxes
            (LatexExtractionConfig(boxed_match_priority=-1), ExprExtractionConfig())
        )
        for pattern, priority in patterns
    ]
    flagged.sort(key=lambda item: item[2])
    return [
        [(pattern, is_latex) for pattern, is_latex, _ in group]
        for _, group in groupby(flagged, key=lambda item: item[2])
    ]


def _math_verify_span(text: str) -> str | None:
    """The text math-verify's own extraction would parse: within the best priority level that
    matches, the rightmost match, as math-verify orders them; fragments are skipped. Only the
    tail is searched: its lazy `answer.{0,50}?` patterns cost seconds on long inputs."""
    text = text[-_MATH_VERIFY_TAIL_CHARS:]
    for level in _math_verify_patterns():
        matches = [(m, is_latex) for pattern, is_latex in level for m in pattern.finditer(text)]
        matches.sort(key=lambda item: (item[0].end(), -item[0].start()), reverse=True)
        for match, is_latex in matches:
            span = _latex_span(match) if is_latex else _expr_span(match, text)
            if span:
                return span
    return None


def _latex_span(match: re.Match[str]) -> str | None:
    """The LaTeX of the match's environments (`$a$ and $b$` -> `a, b`), percent signs kept."""
    pieces = []
    for prefix in ["first_", *(f"next{i}_" for i in range(1, 6))]:
        groups = {k: v for k, v in match.groupdict().items() if k.startswith(prefix) and v}
        latex = next((v for k, v in groups.items() if "latex" in k), None)
        if latex is None:
            continue
        pieces.append(latex.strip() + ("\\%" if f"{prefix}percent" in groups else ""))
    return ", ".join(pieces) or None


def _expr_span(match: re.Match[str], text: str) -> str | None:
    """A plain number or expression, unless it is a fragment of a larger expression."""
    groups = {k: v for k, v in match.groupdict().items() if v}
    names = [k for k in groups if k.startswith(("integer", "decimal", "expr"))]
    if not names:
        return None
    start = min(match.start(k) for k in names)
    end = max(match.end(k) for k in names)
    if _is_fragment(text, start, end):
        return None
    if "expr" in groups:  # `**18**.` matches as the "expression" `18**`
        return _tidy_number(groups["expr"].strip().rstrip(".*").rstrip())
    integer = next((v for k, v in groups.items() if k.startswith("integer")), "")
    decimal = next((v for k, v in groups.items() if k.startswith("decimal")), "")
    negative = integer.startswith("-")
    digits = integer.lstrip("-").translate(str.maketrans("", "", ", ")).lstrip("0") or "0"
    number = ("-" if negative else "") + digits + decimal.replace(",", ".")
    return number + ("\\%" if "percent" in groups else "")


def _is_fragment(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a piece of a larger expression: it sits inside an open
    bracket, after an operator or a LaTeX command (`\\geq`, `\\times`), or before `^`, `_`,
    `}` or a LaTeX command (`5\\sqrt{2}`)."""
    before = text[max(0, start - 200) : start]
    line = before[before.rfind("\n") + 1 :]
    if sum(line.count(c) for c in "([{") > sum(line.count(c) for c in ")]}"):
        return True
    head = before.rstrip().removesuffix("**").rstrip()  # markdown bold is not an operator
    if head and (head[-1] in _FRAGMENT_BEFORE or re.search(r"\\[A-Za-z]+$", head)):
        return True
    tail = text[end : end + 2].lstrip()
    return bool(tail) and tail[0] in _FRAGMENT_AFTER


def _normalize(answer: str) -> str:
    """Cheap canonical form for the exact-match shortcut; anything subtler is math-verify's."""
    compact = _tidy_number("".join(answer.split()))
    if re.fullmatch(r"-?\d+\.\d*", compact):
        compact = compact.rstrip("0").rstrip(".")
    return "0" if compact == "-0" else compact


def _plain_decimals_equal(a: str, b: str) -> bool | None:
    """Whether two answers are the same number, decided here when both are plain decimals
    (`1,234.50` and `1234.5`); None when either needs math-verify."""
    na, nb = _normalize(a), _normalize(b)
    if na == nb:
        return True
    if _DECIMAL.fullmatch(na) and _DECIMAL.fullmatch(nb):
        return Decimal(na) == Decimal(nb)
    return None


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

    answer = _MATHRM_LETTER.sub(r"\1", answer.strip().rstrip("."))
    if _DECIMAL_COMMA.fullmatch(answer):
        answer = answer.replace(",", ".")
    boxed = f"\\boxed{{{answer}}}"
    return list(math_verify.parse(boxed, parsing_timeout=None))


def _parse_gold(gold: str) -> list[Any]:
    """A gold answer is a bare answer (`\\frac{1}{2}`), parsed as one box. A gold written as
    a solution (it holds math delimiters or a box) has two readings, both kept as accepted
    answers: the answer these rules extract from it (`\\boxed{1} and \\boxed{2}` is `1, 2`)
    and math-verify's own extraction."""
    import math_verify

    if not _GOLD_AS_TEXT.search(gold):
        return _parse(gold)
    extracted = extract_answer(gold)
    readings = _parse(extracted) if extracted else []
    readings += math_verify.parse(gold, parsing_timeout=None)
    if not _has_expression(readings):
        readings += _parse(_unwrap_math(gold))  # `$$x = 1, x = 2$$`: math-verify's regexes miss
    return readings


def _has_expression(parsed: list[Any]) -> bool:
    return any(not isinstance(p, str) for p in parsed)


def _verify(gold: list[Any], predicted: list[Any]) -> bool:
    import math_verify

    return bool(
        math_verify.verify(gold, predicted, float_rounding=_FLOAT_DIGITS, timeout_seconds=None)
    )


def _check_answer(gold: str, predicted: str) -> bool | None:
    """Whether `predicted` matches `gold`; None when the gold itself does not parse."""
    gold_parsed = _parse_gold(gold)
    if not _has_expression(gold_parsed):
        return None
    return _verify(gold_parsed, _parse(predicted))


def _same_answer(a: str, b: str) -> bool:
    """Either direction: math-verify's check is asymmetric (`x = 3` as gold accepts `3`)."""
    pa, pb = _parse(a), _parse(b)
    return _verify(pa, pb) or _verify(pb, pa)


class MathAnswerVerifier(Verifier):
    name = "math"
    timeout_s: float

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
        same = _plain_decimals_equal(predicted, gold)
        if same is not None:  # most GSM8K answers: no worker round trip
            plain_status: VerdictStatus = "correct" if same else "incorrect"
            plain_feedback = f"expected {gold}, got {predicted}"
            return Verdict(plain_status, float(same), plain_feedback, predicted, details)
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

    def extract_answer(self, text: str) -> str | None:
        return extract_answer(text)  # the module's rules, as `verify` reads the completion

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        """Unknown counts as different: a wrong split costs a vote, a wrong merge can pick
        the wrong answer."""
        same = _plain_decimals_equal(a, b)
        if same is not None:  # votes compare many such pairs
            return same
        try:
            return bool(self._pool.call(self._same, a, b, timeout=self.timeout_s))
        except Exception:  # a failed check is "not shown equal"
            return False

    def close(self) -> None:
        self._pool.close()
