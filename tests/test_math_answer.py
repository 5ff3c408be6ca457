from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
from _isolation_helpers import hang, verify_status

from reasoner.types import Completion, Problem, Verdict
from reasoner.verifiers import VERIFIERS, load
from reasoner.verifiers.math_answer import MathAnswerVerifier, extract_answer


def _problem(gold: str | None) -> Problem:
    return Problem(id="p1", question="q", answer=gold)


def _completion(text: str) -> Completion:
    return Completion(text=text, finish_reason="stop", prompt_tokens=0, completion_tokens=0)


@pytest.fixture(scope="module")
def verifier() -> Iterator[MathAnswerVerifier]:
    v = MathAnswerVerifier(timeout_s=20.0, workers=2)
    yield v
    v.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so we get \boxed{\frac{a}{b^{2}}}.", r"\frac{a}{b^{2}}"),
        (r"first \boxed{3}, then corrected: \boxed{4}", "4"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\fbox{7}", "7"),
        (r"\boxed{5} but the answer is 6", "5"),
        # an unclosed box is a truncated answer (`\boxed{12` may have been `\boxed{12\sqrt{3}}`)
        (r"\boxed{12", None),
        ("Adding up...\n#### 1,234", "1234"),
        ("#### $18", "18"),
        ("So the answer is 18.", "18"),
        ("The final answer is $\\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
        ("The answer is **42**.", "42"),
        ("**The final answer is 42.**", "42"),
        (r"the answer is \(\sqrt{2}\).", r"\sqrt{2}"),
        ("The answer is 18 dollars.", "18"),
        ("The answer is 2 and 3.", "2 and 3"),
        ("The answer is 7. Then the answer is 9.", "9"),
        ("I have 3 apples, then 1,234,567 more.", "1234567"),
        ("the temperature fell to -4.5 degrees", "-4.5"),
        ("about 3/4 of it", "3/4"),
        ("It costs $12.50.", "12.50"),
        ("<think>the answer is 5</think>So it is 7", "7"),
        ("scratch 99 </think> final 8", "8"),
        ("<think>truncated 5 5 5", None),
        ("no digits here", None),
        ("", None),
        # a final-answer sentence beats an earlier intermediate box
        (
            r"so $\boxed{255}$ more. Total $10,455. Final Answer: The final answer is $10,455$. "
            "I hope it is correct.",
            "10455",
        ),
        ("Final Answer: Jane started growing Sphere 3 hours ago. I hope it is correct.", "3"),
        (r"the answer is \boxed{5}. Final answer: $4$. Wait, \boxed{6}", "6"),
        # several final boxes are one answer
        (r"\boxed{-2} \text{ and } \boxed{1}", "-2, 1"),
        (r"\boxed{1}, \boxed{2}, \boxed{3}", "1, 2, 3"),
        (r"$y_1 = \boxed{x+1}$ and $y_2 = \boxed{x-1}$", "x+1, x-1"),
        (r"First \boxed{3}. Checking again, it is \boxed{5}.", "5"),
        (r"\boxed{\boxed{8}}", "8"),
        # no fragment of an expression is an answer
        (r"$\frac{1+\sqrt{5}}{2}$", r"\frac{1+\sqrt{5}}{2}"),
        (r"so it is \frac{1+\sqrt{5}}{2} then", None),
        ("the pair is (7, 6) here", None),
        (r"so x \geq 5 holds", None),
        (r"it is $1 \times 10^3$", r"1 \times 10^3"),
        (r"a bare \frac{10}{9}", r"\frac{10}{9}"),
        # bare answers
        (".4", ".4"),
        ("$odd$", "odd"),
        ("x^2 + 2*x + 1", "x^2 + 2*x + 1"),
        ("So the total is **18**.", "18"),
        ("The answer is 8 hours and 30 minutes.", "8 hours and 30 minutes"),
        ("The answer is 4 since 2 + 2 = 4.", "4"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_is_linear_on_pathological_input() -> None:
    start = time.monotonic()
    for text in ("\\boxed{" * 50_000, "{" * 200_000, "</think>" * 50_000, "1," * 100_000):
        extract_answer(text)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("gold", "text"),
    [
        ("18", "#### 18"),
        ("18", "The answer is 18.0"),
        ("18", "It costs $18."),
        ("18", r"\boxed{18.00}"),
        ("1234", "#### 1,234"),
        ("1,234", r"\boxed{1234}"),
        (r"\frac{1}{2}", "The answer is 0.5"),
        ("0.5", r"\boxed{\dfrac{1}{2}}"),
        (r"2\sqrt{3}", r"\boxed{\sqrt{12}}"),
        (r"\{1,2\}", r"\boxed{\{2, 1\}}"),
        ("(1,2)", r"\boxed{(1, 2)}"),
        ("2, 3", "The answer is 3 and 2."),
        ("1,-2", r"\boxed{-2} \text{ and } \boxed{1}"),
        (r"\{1,2,3\}", r"\boxed{1}, \boxed{2}, \boxed{3}"),
        (
            "10455",
            r"\boxed{255}. Final Answer: The final answer is $10,455$. I hope it is correct.",
        ),
        ("0.4", ".4"),
        (r"\text{odd}", "$odd$"),
        ("0.4", r"The answer is $\boxed{0.4}$"),
        (r"x^2+2x+1", "x^2 + 2*x + 1"),
        ("1000.99", "1000,99"),
        ("(7,6)", "So the pair is $(7, 6)$."),
        (r"\text{E}", "$E$"),
    ],
)
def test_equivalent_answers_are_correct(verifier: MathAnswerVerifier, gold: str, text: str) -> None:
    verdict = verifier.verify(_problem(gold), _completion(text))
    assert verdict.status == "correct", verdict
    assert verdict.score == 1.0
    assert verdict.details["gold"] == gold


@pytest.mark.parametrize(
    ("gold", "text"),
    [
        ("18", "#### 17"),
        ("(1,2)", r"\boxed{(2,1)}"),
        (r"\frac{1}{2}", r"\boxed{\frac{1}{3}}"),
        # the fragments a last-number fallback used to read
        ("2", r"so $\frac{1+\sqrt{5}}{2}$"),
        ("1", "$-[0,1)$"),
        ("6", "the solution is (7, 6)"),
        ("3", r"it is $1 \times 10^3$"),
        ("9", r"a bare \frac{10}{9}"),
        ("5", r"so x \geq 5"),
        ("1", r"$\begin{pmatrix} 1 \\ 0 \end{pmatrix}$"),
        # plain-text false positives
        ("8", "The answer is 8 hours and 30 minutes."),
        ("1/7", r"\boxed{0.142857}"),
        ("1, 2", r"\boxed{1}"),
        ("3", r"\boxed{3}\n\nFinal Answer: The final answer is $4$. I hope it is correct."),
    ],
)
def test_wrong_answers_are_incorrect(verifier: MathAnswerVerifier, gold: str, text: str) -> None:
    verdict = verifier.verify(_problem(gold), _completion(text))
    assert verdict.status == "incorrect", verdict
    assert verdict.score == 0.0


def test_feedback_names_both_answers(verifier: MathAnswerVerifier) -> None:
    verdict = verifier.verify(_problem("18"), _completion("#### 17"))
    assert verdict.feedback == "expected 18, got 17"
    assert verdict.answer == "17"
    assert verdict.details == {"gold": "18", "extracted": "17"}


def test_missing_answer_is_incorrect(verifier: MathAnswerVerifier) -> None:
    verdict = verifier.verify(_problem("18"), _completion("I am not sure."))
    assert verdict == Verdict("incorrect", 0.0, "no answer found", None, verdict.details)


def test_unparsable_gold_is_error_not_incorrect(verifier: MathAnswerVerifier) -> None:
    verdict = verifier.verify(_problem("@@@"), _completion(r"\boxed{7}"))
    assert verdict.status == "error"
    assert "'@@@'" in verdict.feedback and "'p1'" in verdict.feedback


def test_gold_math_verify_misreads_is_error_not_correct(verifier: MathAnswerVerifier) -> None:
    # `$0.\overline{3}$` parses as 0; the verifier must not pass a "0" against it.
    verdict = verifier.verify(_problem(r"0.\overline{3}"), _completion(r"\boxed{0}"))
    assert verdict.status == "error"


def test_missing_gold_is_error(verifier: MathAnswerVerifier) -> None:
    assert verifier.verify(_problem(None), _completion("#### 3")).status == "error"


def test_equivalent(verifier: MathAnswerVerifier) -> None:
    problem = _problem(None)
    assert verifier.equivalent(problem, "0.5", r"\frac{1}{2}")
    assert verifier.equivalent(problem, "1,234", "1234")
    assert not verifier.equivalent(problem, "3", "4")
    assert verifier.equivalent(problem, "2.50", "2.5")
    assert not verifier.equivalent(problem, "-2", "2")
    assert verifier.equivalent(problem, "$1,000", "1000.0")


def test_verify_from_a_thread(verifier: MathAnswerVerifier) -> None:
    verdicts: list[Verdict] = []
    thread = threading.Thread(
        target=lambda: verdicts.append(
            verifier.verify(_problem(r"\frac{1}{2}"), _completion(r"\boxed{0.5}"))
        )
    )
    thread.start()
    thread.join(timeout=60)
    assert [v.status for v in verdicts] == ["correct"]


def test_verify_batch_uses_threads(verifier: MathAnswerVerifier) -> None:
    pairs = [(_problem("0.5"), _completion(rf"\boxed{{\frac{{1}}{{{d}}}}}")) for d in (2, 3, 2)]
    assert [v.status for v in verifier.verify_batch(pairs)] == ["correct", "incorrect", "correct"]


def test_verify_inside_a_process_pool_worker() -> None:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        assert pool.submit(verify_status, r"\frac{1}{2}", r"\boxed{0.5}").result(60) == "correct"


def test_hung_check_is_error_and_verifier_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    with MathAnswerVerifier(timeout_s=0.5, workers=1) as v:
        problem, completion = _problem(r"\frac{1}{2}"), _completion(r"\boxed{0.5}")
        assert v.verify(problem, completion).status == "correct"  # worker started and warm
        monkeypatch.setattr(v, "_check", hang)
        start = time.monotonic()
        verdict = v.verify(problem, completion)
        assert time.monotonic() - start < 3
        assert verdict.status == "error"
        assert verdict.feedback == "verifier timed out after 0.5s"
        monkeypatch.undo()
        assert v.verify(problem, completion).status == "correct"


def test_registry() -> None:
    assert VERIFIERS["math"] is MathAnswerVerifier
    with load("math", workers=1) as v:
        assert isinstance(v, MathAnswerVerifier)
    with pytest.raises(ValueError, match=r"unknown verifier 'maths'; choose one of: .*\bmath\b"):
        load("maths")


def test_plain_decimals_are_decided_without_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    with MathAnswerVerifier(timeout_s=0.5, workers=1) as v:
        monkeypatch.setattr(v, "_check", hang)  # any worker call would time out
        assert v.verify(_problem("1234.5"), _completion("#### 1,234.50")).status == "correct"
        assert v.verify(_problem("18"), _completion("#### 17")).status == "incorrect"
        assert v.verify(_problem(r"\frac{1}{2}"), _completion("#### 0.5")).status == "error"
