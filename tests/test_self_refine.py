"""Self-refine: when a problem stops, what a refine turn shows the model, one engine call per
round for the problems still refining, blind versus oracle feedback, and budgets; control flow
with a scripted generator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from _scripted_generator import ScriptedGenerator

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.strategies.base import Budget, StrategyConfig
from reasoner.strategies.self_refine import Options, SelfRefine, stop_reason
from reasoner.types import Completion, GenerationRequest, Problem, SamplingParams, Trace, Verdict
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.math_answer import MathAnswerVerifier

# --- stopping --------------------------------------------------------------------------------

WRONG = Verdict("incorrect", 0.0, "step 2 is wrong")
FAILED = Verdict("error", 0.0, "no VERDICT line")


def test_a_problem_stops_when_its_check_passes_or_its_rounds_or_budget_run_out() -> None:
    options = Options(max_rounds=2)
    assert stop_reason(Verdict("correct", 1.0), 0, options, spent=False) == "passed"
    assert stop_reason(WRONG, 0, options, spent=False) is None
    assert stop_reason(WRONG, 2, options, spent=False) == "max_rounds"
    assert stop_reason(WRONG, 1, options, spent=True) == "budget"
    # a passing check wins over a spent budget: the answer is kept, and it passed
    assert stop_reason(Verdict("correct", 1.0), 1, options, spent=True) == "passed"


def test_a_failed_check_refines_or_stops_as_configured() -> None:
    assert stop_reason(FAILED, 0, Options(), spent=False) is None
    assert stop_reason(FAILED, 0, Options(on_feedback_error="stop"), spent=False) == (
        "feedback_error"
    )


# --- options ---------------------------------------------------------------------------------


def _config(n: int = 1, **kwargs: object) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("math_cot"), SamplingParams(temperature=0.0, max_tokens=64), n=n, **kwargs
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_rounds": -1}, "strategy.options.max_rounds"),
        ({"feedback": "oracle"}, "strategy.options.feedback"),
        ({"feedback_detail": "all"}, "strategy.options.feedback_detail"),
        ({"max_round": 2}, "strategy.options.max_round"),
        ({"refine_prompt": "no-such-prompt"}, "strategy.options.refine_prompt"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        SelfRefine().validate(_config(options=options))
    assert field in str(info.value)


def test_more_than_one_sample_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.n must be 1"):
        SelfRefine().validate(_config(n=4))


# --- control flow ---------------------------------------------------------------------------

PROBLEMS = [
    Problem("a", "What is 9 + 9?", "18"),
    Problem("b", "What is 2 * 3?", "6"),
    Problem("c", "What is 10 - 7?", "3"),
]
# the replies per problem, by round: a is fixed in round 1, b is right at once, c never is
REPLIES = {
    "What is 9 + 9?": [r"\boxed{17}", r"\boxed{18}"],
    "What is 2 * 3?": [r"\boxed{6}"],
    "What is 10 - 7?": [r"\boxed{4}", r"\boxed{5}", r"\boxed{2}", r"\boxed{1}"],
}


def _script(request: GenerationRequest, call: int) -> list[str]:
    """Each round is one call, so the call's index is the round."""
    assert request.messages is not None
    question = next(m.content for m in request.messages if m.role == "user")
    return [REPLIES[question][call]]


@pytest.fixture(scope="module")
def math_verifier() -> Iterator[MathAnswerVerifier]:
    verifier = MathAnswerVerifier(timeout_s=20.0, workers=1)
    yield verifier
    verifier.close()


def _oracle(**options: object) -> dict[str, object]:
    return {"feedback": "verifier", "feedback_sees_answer": True, **options}


def _run(
    verifier: Verifier, options: dict[str, object], **kwargs: object
) -> tuple[list[Trace], list[str], ScriptedGenerator]:
    generator = ScriptedGenerator(_script)
    finished: list[str] = []
    traces = SelfRefine().run(
        PROBLEMS,
        generator,
        verifier,
        _config(options=options, oracle=bool(options.get("feedback_sees_answer")), **kwargs),
        on_trace=lambda t: finished.append(t.problem.id),
    )
    return traces, finished, generator


def test_each_round_is_one_engine_call_for_the_problems_still_refining(
    math_verifier: MathAnswerVerifier,
) -> None:
    traces, finished, generator = _run(math_verifier, _oracle(max_rounds=3))
    # round 0: all three; round 1: a and c; rounds 2 and 3: c alone
    assert generator.calls == [3, 2, 1, 1]
    by_id = {t.problem.id: t for t in traces}
    assert [len(by_id[i].steps) for i in "abc"] == [2, 1, 4]
    # traces reach the caller as problems finish, not when the batch does
    assert finished == ["b", "a", "c"]
    assert by_id["a"].verdict.is_correct and by_id["a"].prediction == "18"
    assert by_id["c"].prediction == "1" and not by_id["c"].verdict.is_correct
    assert [n.get("stop") for n in by_id["a"].tree] == [None, "passed"]
    assert by_id["c"].tree[-1]["stop"] == "max_rounds"
    assert by_id["c"].verdict.details["rounds"] == 4


def test_a_refine_turn_continues_the_chat_with_the_attempt_and_its_feedback(
    math_verifier: MathAnswerVerifier,
) -> None:
    _, _, generator = _run(math_verifier, _oracle(max_rounds=1))
    refine = generator.batches[1][0]
    assert refine.messages is not None
    roles = [m.role for m in refine.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert refine.messages[2].content == r"\boxed{17}"
    # oracle feedback with its text: the math verifier's feedback names the gold answer
    assert "expected 18, got 17" in refine.messages[3].content
    # each round draws with its own seed
    assert refine.sampling.seed != generator.batches[0][0].sampling.seed


@pytest.mark.parametrize("history", ["full", "last"])
def test_the_round_3_prompt_holds_the_history_or_only_the_last_attempt(
    math_verifier: MathAnswerVerifier, history: str
) -> None:
    # problem c is wrong in every round: its round-2 request is the third prompt it gets
    _, _, generator = _run(math_verifier, _oracle(max_rounds=2, history=history))
    (third,) = [r for r in generator.batches[2] if "10 - 7" in r.messages[1].content]  # type: ignore[index]
    assert third.messages is not None
    turns = [(m.role, m.content) for m in third.messages[2:]]
    first = ("assistant", r"\boxed{4}")
    second = ("assistant", r"\boxed{5}")
    if history == "full":  # attempt 1, its feedback, attempt 2, its feedback
        assert [role for role, _ in turns] == ["assistant", "user", "assistant", "user"]
        assert turns[0] == first and "expected 3, got 4" in turns[1][1]
        assert turns[2] == second and "expected 3, got 5" in turns[3][1]
    else:  # only attempt 2 and its feedback
        assert turns[0] == second and len(turns) == 2
        assert "expected 3, got 5" in turns[1][1]
        assert all("got 4" not in m.content and m.content != first[1] for m in third.messages)


def test_verdict_only_feedback_hides_the_checkers_text(math_verifier: MathAnswerVerifier) -> None:
    _, _, generator = _run(math_verifier, _oracle(max_rounds=1, feedback_detail="verdict"))
    turn = generator.batches[1][0].messages[-1].content  # type: ignore[index]
    assert "18" not in turn and "not correct" in turn


def test_usage_adds_up_over_rounds(math_verifier: MathAnswerVerifier) -> None:
    traces, _, _ = _run(math_verifier, _oracle(max_rounds=3))
    for trace in traces:
        assert trace.usage.engine_calls == len(trace.steps)
        assert trace.usage.prompt_tokens == sum(s.completions[0].prompt_tokens for s in trace.steps)
        assert trace.usage.completion_tokens == sum(
            s.completions[0].completion_tokens for s in trace.steps
        )
        # the oracle is the run's verifier, so each round is checked once, not twice
        assert trace.usage.verifier_calls == len(trace.steps)
    c = next(t for t in traces if t.problem.id == "c")
    # a refine prompt holds the first prompt and more, so later rounds prefill more
    assert c.steps[1].completions[0].prompt_tokens > c.steps[0].completions[0].prompt_tokens


def test_a_spent_budget_stops_refining(math_verifier: MathAnswerVerifier) -> None:
    traces, _, generator = _run(math_verifier, _oracle(max_rounds=3), budget=Budget(calls=2))
    assert generator.calls == [3, 2]  # c would refine on, but has had its two calls
    c = next(t for t in traces if t.problem.id == "c")
    assert len(c.steps) == 2 and c.tree[-1]["stop"] == "budget"
    # a token budget: round 0 of each problem spends more than 1 token, so nothing refines
    _, _, generator = _run(math_verifier, _oracle(max_rounds=3), budget=Budget(tokens=1))
    assert generator.calls == [3]


class BlindJudge(Verifier):
    """A deterministic stand-in checker for control flow: passes a sample whose boxed answer
    matches its own table (not the gold answer, which it records it never receives)."""

    name = "blind-judge"
    reads_gold = False

    def __init__(self, accepted: set[str]) -> None:
        self.accepted = accepted
        self.seen: list[Problem] = []
        self.batches: list[int] = []

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        raise AssertionError("strategies must check in batches")

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        self.batches.append(len(pairs))
        self.seen.extend(p for p, _ in pairs)
        return [
            Verdict("correct", 1.0, "looks right")
            if c.text in self.accepted
            else Verdict("incorrect", 0.0, "recheck the last step")
            for _, c in pairs
        ]


def test_scorer_feedback_is_blind_and_steers_the_loop(math_verifier: MathAnswerVerifier) -> None:
    # the judge wrongly accepts c's first answer (4) and rejects b's right one
    judge = BlindJudge({r"\boxed{4}", r"\boxed{18}"})
    generator = ScriptedGenerator(
        lambda r, call: (
            [REPLIES["What is 2 * 3?"][0]]
            if "2 * 3" in r.messages[1].content and call > 0  # type: ignore[index]
            else _script(r, call)
        )
    )
    traces = SelfRefine().run(
        PROBLEMS, generator, math_verifier, _config(options={"max_rounds": 1}, scorer=judge)
    )
    assert judge.seen and all(p.answer is None for p in judge.seen)
    assert judge.batches == [3, 2] and generator.calls == [3, 2]
    by_id = {t.problem.id: t for t in traces}
    # c stops on the judge's (wrong) pass; the run's verifier still grades it incorrect
    assert len(by_id["c"].steps) == 1 and not by_id["c"].verdict.is_correct
    assert "recheck the last step" in generator.batches[1][0].messages[-1].content  # type: ignore[index]
    # each round: one run-verifier check and one feedback check
    assert by_id["a"].usage.verifier_calls == 4


def test_feedback_sources_that_cannot_work_are_refused(math_verifier: MathAnswerVerifier) -> None:
    generator = ScriptedGenerator(_script)
    with pytest.raises(ConfigError, match=r"strategy\.scorer"):
        SelfRefine().run(PROBLEMS, generator, math_verifier, _config())
    # the math verifier, blind, can only say `error`
    with pytest.raises(ConfigError, match=r"'math' verifier grades against the gold.*oracle=true"):
        SelfRefine().run(
            PROBLEMS, generator, math_verifier, _config(options={"feedback": "verifier"})
        )
    # saying the checker may see the answer is an oracle too, and must be declared one
    with pytest.raises(ConfigError, match=r"feedback_sees_answer=true .*strategy\.oracle=true"):
        SelfRefine().run(PROBLEMS, generator, math_verifier, _config(options=_oracle()))
    with pytest.raises(ConfigError, match="does not use it"):
        SelfRefine().run(
            PROBLEMS,
            generator,
            math_verifier,
            _config(options=_oracle(), scorer=BlindJudge(set())),
        )
    assert generator.calls == []


def test_whether_a_scorer_is_needed_depends_on_the_feedback_option() -> None:
    assert SelfRefine().needs_scorer_for(_config())
    assert not SelfRefine().needs_scorer_for(_config(options=_oracle()))
