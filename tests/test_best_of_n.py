"""Best-of-N: the pick rules, option checks, and the control flow (one engine call for all
problems, a scorer that never sees the gold answer, usage) with a scripted generator."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import pytest
from _scripted_generator import ScriptedGenerator

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.strategies.base import Budget, StrategyConfig
from reasoner.strategies.best_of_n import (
    BestOfN,
    pick,
    pick_max,
    pick_weighted_majority,
)
from reasoner.types import Completion, GenerationRequest, Problem, SamplingParams, Trace, Verdict
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.math_answer import MathAnswerVerifier

# --- the pick rules ------------------------------------------------------------------------


def test_max_takes_the_highest_score_and_the_first_on_a_tie() -> None:
    assert pick_max([0.2, 0.9, 0.9, 0.1]) == 1
    assert pick_max([None, 0.0, None]) == 1  # a scorer error ranks below a real 0
    assert pick_max([None, None]) is None


def test_weighted_majority_sums_scores_per_answer_class() -> None:
    scores = [0.9, 0.5, 0.5, 0.1]
    clusters = [0, 1, 1, 2]
    assert pick_max(scores) == 0  # the single best sample says answer 0 ...
    assert pick_weighted_majority(scores, clusters) == 1  # ... but class 1 weighs 1.0
    # within the winning class, its best-scored member
    assert pick_weighted_majority([0.9, 0.4, 0.6, 0.1], clusters) == 2


def test_weighted_majority_ignores_samples_without_an_answer() -> None:
    # the top-scored sample has no answer (-1) and so casts no vote
    assert pick_weighted_majority([1.0, 0.3, 0.2], [-1, 0, 1]) == 1
    # ties between classes go to the class seen first
    assert pick_weighted_majority([0.5, 0.5], [1, 0]) == 0


def test_without_scores_the_pick_falls_back_to_a_plain_vote_then_the_first_sample() -> None:
    assert pick_weighted_majority([None, None, None], [0, 1, 1]) is None
    assert pick("weighted-majority", [None, None, None], [0, 1, 1]) == (1, "majority (no scores)")
    assert pick("max", [None, None], [-1, -1]) == (0, "first (no scores, no answers)")
    assert pick("max", [0.1, 0.7], [0, 0]) == (1, "max")


# --- options ---------------------------------------------------------------------------------


def _config(n: int = 4, temperature: float = 0.7, **kwargs: object) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("math_cot"),
        SamplingParams(temperature=temperature, max_tokens=64),
        n=n,
        **kwargs,  # type: ignore[arg-type]
    )


def test_unknown_option_is_named_with_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        BestOfN().validate(_config(options={"selct": "max"}))
    assert "strategy.options.selct" in str(info.value)
    assert "select" in str(info.value) and "scorer_batch" in str(info.value)


def test_bad_option_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.options\.select"):
        BestOfN().validate(_config(options={"select": "min"}))
    with pytest.raises(ConfigError, match=r"strategy\.options\.scorer_batch"):
        BestOfN().validate(_config(options={"scorer_batch": 0}))


def test_identical_samples_and_unbindable_budgets_are_refused() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        BestOfN().validate(_config(n=4, temperature=0.0))
    with pytest.raises(ConfigError, match="budget_tokens"):
        BestOfN().validate(_config(budget=Budget(tokens=1000)))
    BestOfN().validate(_config(n=1, temperature=0.0, budget=Budget(calls=1)))


# --- control flow ---------------------------------------------------------------------------


class RecordingScorer(Verifier):
    """A deterministic scorer for control-flow tests: the score is looked up by the sample's
    text, and every problem it is shown is recorded (to prove it never sees gold)."""

    name = "recording"
    reads_gold = False

    def __init__(self, scores: dict[str, float | None]) -> None:
        self.scores = scores
        self.seen: list[Problem] = []
        self.batches: list[int] = []

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        raise AssertionError("strategies must score in batches")

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        self.batches.append(len(pairs))
        verdicts = []
        for problem, completion in pairs:
            self.seen.append(problem)
            score = self.scores[completion.text]
            if score is None:
                verdicts.append(Verdict("error", 0.0, "scorer failed"))
            else:
                status = "correct" if score >= 0.5 else "incorrect"
                verdicts.append(Verdict(status, score, f"score {score}"))
        return verdicts


PROBLEMS = [
    Problem("a", "What is 9 + 9?", "18"),
    Problem("b", "What is 2 * 3?", "6"),
]
SAMPLES = {
    "What is 9 + 9?": [r"\boxed{17}", r"\boxed{18}", r"\boxed{18}", r"\boxed{20}"],
    "What is 2 * 3?": [r"\boxed{6}", r"\boxed{5}", "no idea", r"\boxed{6.0}"],
}
SCORES: dict[str, float | None] = {
    r"\boxed{17}": 0.9,
    r"\boxed{18}": 0.6,
    r"\boxed{20}": 0.1,
    r"\boxed{6}": 0.4,
    r"\boxed{5}": 0.8,
    "no idea": None,
    r"\boxed{6.0}": 0.5,
}


def _script(request: GenerationRequest, call: int) -> list[str]:
    assert request.messages is not None
    return SAMPLES[request.messages[-1].content]


@pytest.fixture(scope="module")
def math_verifier() -> Iterator[MathAnswerVerifier]:
    verifier = MathAnswerVerifier(timeout_s=20.0, workers=1)
    yield verifier
    verifier.close()


def _run(
    verifier: Verifier, select: str, scorer_batch: int | None = None
) -> tuple[list[Trace], list[Trace], ScriptedGenerator, RecordingScorer]:
    generator = ScriptedGenerator(_script)
    scorer = RecordingScorer(SCORES)
    streamed: list[Trace] = []
    options: dict[str, object] = {"select": select}
    if scorer_batch is not None:
        options["scorer_batch"] = scorer_batch
    traces = BestOfN().run(
        PROBLEMS,
        generator,
        verifier,
        _config(options=options, scorer=scorer),
        on_trace=streamed.append,
    )
    return traces, streamed, generator, scorer


def test_one_engine_call_for_all_problems_and_a_blind_scorer(
    math_verifier: MathAnswerVerifier,
) -> None:
    traces, streamed, generator, scorer = _run(math_verifier, "max")
    assert generator.calls == [2]  # both problems, n samples each, in one call
    assert all(r.sampling.n == 4 for r in generator.batches[0])
    assert scorer.batches == [8]  # every sample of every problem, in one scorer call
    assert scorer.seen and all(p.answer is None for p in scorer.seen)
    assert [t.problem.id for t in streamed] == ["a", "b"] == [t.problem.id for t in traces]


def test_max_picks_the_scorers_favourite_and_the_verifier_grades_it(
    math_verifier: MathAnswerVerifier,
) -> None:
    traces, _, _, _ = _run(math_verifier, "max")
    a, b = traces
    # problem a: the scorer prefers the wrong 17; best-of-n must follow the scorer, not the gold
    assert a.prediction == "17" and a.verdict.status == "incorrect"
    assert a.verdict.details["picked_sample"] == 0 and a.verdict.details["picked_by"] == "max"
    assert b.prediction == "5" and b.verdict.status == "incorrect"
    # every sample is graded by the run's verifier, for pass@k
    assert [v.status for v in a.samples] == ["incorrect", "correct", "correct", "incorrect"]
    assert [node["picked"] for node in a.tree] == [True, False, False, False]
    assert b.tree[2]["score"] is None and b.tree[2]["scorer_status"] == "error"
    assert b.verdict.details["scorer_errors"] == 1


def test_weighted_majority_lets_agreeing_samples_outvote_the_top_score(
    math_verifier: MathAnswerVerifier,
) -> None:
    traces, _, _, _ = _run(math_verifier, "weighted-majority")
    a, b = traces
    # a: 18 twice (0.6 + 0.6 = 1.2) outweighs 17 once (0.9)
    assert a.prediction == "18" and a.verdict.is_correct
    assert a.verdict.details["picked_sample"] == 1
    # b: 6 and 6.0 are one class (0.4 + 0.5 = 0.9) against 5 (0.8); its best member is 6.0
    assert b.clusters[0] == b.clusters[3] != b.clusters[1]
    assert b.verdict.is_correct and b.verdict.details["picked_sample"] == 3
    assert b.tree[3]["cluster_weight"] == pytest.approx(0.9)


def test_usage_counts_the_prompt_once_and_every_sample(
    math_verifier: MathAnswerVerifier,
) -> None:
    traces, _, _, _ = _run(math_verifier, "max")
    for trace in traces:
        completions = trace.steps[0].completions
        assert trace.usage.engine_calls == 1
        assert trace.usage.prompt_tokens == completions[0].prompt_tokens > 0
        assert trace.usage.completion_tokens == sum(c.completion_tokens for c in completions)
        assert trace.usage.verifier_calls == 8  # 4 run-verifier checks + 4 scorer calls
        assert trace.usage.wall_time_s > 0


def test_scorer_batch_splits_scoring_but_not_generation(
    math_verifier: MathAnswerVerifier,
) -> None:
    traces, _, generator, scorer = _run(math_verifier, "max", scorer_batch=1)
    assert generator.calls == [2]
    assert scorer.batches == [4, 4]
    assert len(traces) == 2


def test_a_run_without_a_scorer_is_refused(math_verifier: MathAnswerVerifier) -> None:
    with pytest.raises(ConfigError, match=re.escape("strategy.scorer")):
        BestOfN().run(PROBLEMS, ScriptedGenerator(_script), math_verifier, _config())
