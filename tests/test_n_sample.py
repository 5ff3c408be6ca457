"""The shared n-sample loop: seeds, the one `strategy.n` check, strict options, empty replies."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from _scripted_generator import ScriptedGenerator

from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.prompts import load_prompt
from reasoner.strategies import problem_seed
from reasoner.strategies.base import StrategyConfig
from reasoner.strategies.lean.whole_proof import LeanWholeProof
from reasoner.strategies.sampling import Greedy, SelfConsistency
from reasoner.types import Completion, GenerationRequest, Problem, SamplingParams
from reasoner.verifiers.math_answer import MathAnswerVerifier

PROBLEMS = [
    Problem(id="a", question="1+1?", answer="2"),
    Problem(id="b", question="2+2?", answer="4"),
]


def _config(n: int, **options: object) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("math_cot"), SamplingParams(temperature=0.7), n=n, seed=5, options=options
    )


@pytest.fixture
def verifier() -> Iterator[MathAnswerVerifier]:
    with MathAnswerVerifier() as v:
        yield v


def test_requests_carry_each_problems_seed_and_the_vote_picks_the_majority(
    verifier: MathAnswerVerifier,
) -> None:
    replies = {"a": ["\\boxed{3}", "\\boxed{2}", "\\boxed{2}"], "b": ["\\boxed{4}"] * 3}
    generator = ScriptedGenerator(lambda r, _: replies["a" if "1+1" in str(r.messages) else "b"])
    traces = SelfConsistency().run(PROBLEMS, generator, verifier, _config(3))
    assert generator.calls == [2]
    assert [r.sampling.seed for r in generator.batches[0]] == [
        problem_seed(5, "a"),
        problem_seed(5, "b"),
    ]
    assert [t.verdict.status for t in traces] == ["correct", "correct"]
    assert traces[0].clusters == [0, 1, 1] and traces[0].prediction == "2"
    assert traces[0].usage.verifier_calls == 3 and traces[0].usage.engine_calls == 1


def test_one_n_check_and_strict_options_for_every_n_sample_strategy() -> None:
    for strategy in (SelfConsistency(), Greedy(), LeanWholeProof()):
        with pytest.raises(
            ConfigError, match=r"strategy\.n \(samples per problem\) must be at least 1"
        ):
            strategy.validate(_config(0))
        with pytest.raises(
            ConfigError, match=r"unknown key 'strategy\.options\.k'.*takes no options"
        ):
            strategy.validate(_config(1, k=2))


class NoSamples(Generator):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        return [[] for _ in requests]


def test_a_problem_the_engine_returned_nothing_for_is_incorrect(
    verifier: MathAnswerVerifier,
) -> None:
    for strategy in (SelfConsistency(), LeanWholeProof()):
        (trace, _) = strategy.run(PROBLEMS, NoSamples(), verifier, _config(2))
        assert trace.verdict.status == "incorrect" and trace.prediction is None
        assert "no samples" in trace.verdict.feedback


def test_a_generator_must_implement_generate_or_generate_stream() -> None:
    with pytest.raises(TypeError, match="generate or generate_stream"):

        class Neither(Generator):
            pass
