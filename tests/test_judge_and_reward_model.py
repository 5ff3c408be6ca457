"""The LLM judge and the reward-model verifier on the real SmolLM2 weights.

SmolLM2 is no trained grader: these tests check the machinery (prompting, one batched engine
call, verdict parsing, errors, scores and step aggregation), not the quality of its grades.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from reasoner.models.base import Generator
from reasoner.types import Completion, GenerationRequest, Problem
from reasoner.verifiers import load
from reasoner.verifiers.judge import parse_judgement

PROBLEM = Problem(id="p", question="What is 2 + 3?", answer="5")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The candidate says 5.\nVERDICT: CORRECT", True),
        ("Wrong sum.\nverdict: incorrect", False),
        ("First VERDICT: INCORRECT, on reflection VERDICT: **CORRECT**", True),
        ("I think it is right.", None),
    ],
)
def test_parse_judgement(reply: str, expected: bool | None) -> None:
    assert parse_judgement(reply) is expected


class CountingGenerator(Generator):
    """Passes through to the real generator and counts engine calls."""

    def __init__(self, inner: Generator) -> None:
        self.inner, self.calls = inner, 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.calls += 1
        return self.inner.generate(requests)


def test_judge_grades_a_batch_in_one_engine_call(hf_generator: Any) -> None:
    counting = CountingGenerator(hf_generator)
    judge = load("judge", generator=counting, max_tokens=24)
    candidates = [Completion(t, "stop", 0, 0) for t in ("2 + 3 = 5", "2 + 3 = 6", "7")]
    verdicts = judge.verify_batch([(PROBLEM, c) for c in candidates])
    assert counting.calls == 1
    assert len(verdicts) == 3
    for verdict in verdicts:
        reply = verdict.details["judge_reply"]
        assert reply  # the real model answered
        expected = parse_judgement(reply)
        assert verdict.status == (
            "error" if expected is None else "correct" if expected else "incorrect"
        )
    request_text = hf_generator._prompt_text(
        GenerationRequest(messages=judge.prompt.render(PROBLEM, reference="5", candidate="7"))
    )
    assert "Reference answer:\n5" in request_text and "Candidate solution:\n7" in request_text


def test_judge_engine_failure_is_an_error_verdict() -> None:
    class Broken(Generator):
        def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
            raise RuntimeError("engine died")

    verdict = load("judge", generator=Broken()).verify(PROBLEM, Completion("5", "stop", 0, 0))
    assert verdict.status == "error" and "engine died" in verdict.feedback


@pytest.fixture(scope="module")
def reward_model(test_model_path: Path) -> Any:
    import torch

    torch.manual_seed(0)  # the classification head is freshly initialised: fix it
    return load("reward-model", model=str(test_model_path), step_separator="\n", dtype="float32")


def test_reward_model_scores_whole_answers_and_steps(reward_model: Any) -> None:
    answers = ["2 + 3 = 5\nSo the answer is 5", "2 + 3 = 6\nSo the answer is 6", "5"]
    pairs = [(PROBLEM, Completion(a, "stop", 0, 0)) for a in answers]
    verdicts = reward_model.verify_batch(pairs)
    assert [len(v.details["step_scores"]) for v in verdicts] == [2, 2, 1]
    for verdict in verdicts:
        assert 0.0 <= verdict.score <= 1.0
        assert verdict.score == pytest.approx(min(verdict.details["step_scores"]))
        assert verdict.status == ("correct" if verdict.score >= 0.5 else "incorrect")
    one_by_one = [reward_model.verify(*pair).score for pair in pairs]
    assert one_by_one == pytest.approx([v.score for v in verdicts], abs=1e-3)
    assert verdicts[0].details["step_scores"] != verdicts[1].details["step_scores"]
