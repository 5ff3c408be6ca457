"""Program-aided solving: scripted programs run in the real bubblewrap sandbox; what they print
is checked by the real math verifier and voted on; crashes, hangs and prose are samples with no
answer, their error kept in the trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _scripted_generator import ScriptedGenerator

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.scale.settings import RaySettings
from reasoner.scale.verifiers import ray_verifier
from reasoner.serving.answers import ReferenceFreeVerifier
from reasoner.strategies.base import Budget, StrategyConfig
from reasoner.strategies.program_aided import ProgramAided
from reasoner.types import GenerationRequest, Problem, SamplingParams, Trace
from reasoner.verifiers.code_exec import ProgramAidedMathVerifier, UnitTestVerifier
from reasoner.verifiers.math_answer import MathAnswerVerifier


def _py(code: str) -> str:
    return f"Here is my program.\n```python\n{code}\n```\n"


PROBLEMS = [
    Problem("eggs", "Janet has 16 eggs, eats 3 and bakes with 4. How many are left?", "9"),
    Problem("robe", "A robe takes 2 bolts of blue and half that of white. Total?", "3"),
]
PROGRAMS = {
    "eggs": [
        _py("left = 16 - 3 - 4\nprint(left)"),
        _py("print(16 - 3 - 4.0)"),  # 9.0: the same answer as 9
        _py("print(1 / 0)"),  # crashes
        _py("while True:\n    pass"),  # hangs until the wall-clock limit
    ],
    "robe": [
        "The robe needs 2 + 1 = 3 bolts.",  # prose, no code fence: runs as Python, fails
        _py("blue = 2\nwhite = blue / 2\nprint('steps done')\nprint(blue + white)"),
        _py("x = 5"),  # prints nothing
        _py("print(2 + 2)"),
    ],
}


def _script(request: GenerationRequest, call: int) -> list[str]:
    assert request.messages is not None
    question = request.messages[-1].content
    problem = next(p for p in PROBLEMS if p.question == question)
    return PROGRAMS[problem.id][: request.sampling.n]


def _config(n: int = 4, temperature: float = 0.7, **options: object) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("math_cot"),
        SamplingParams(temperature=temperature, max_tokens=128),
        n=n,
        options={"wall_seconds": 2, **options},
    )


@pytest.fixture(scope="module")
def math_verifier() -> Iterator[MathAnswerVerifier]:
    verifier = MathAnswerVerifier(timeout_s=20.0, workers=1)
    yield verifier
    verifier.close()


@pytest.fixture(scope="module")
def run(math_verifier: MathAnswerVerifier) -> tuple[list[Trace], list[str], ScriptedGenerator]:
    generator = ScriptedGenerator(_script)
    finished: list[str] = []
    traces = ProgramAided().run(
        PROBLEMS,
        generator,
        math_verifier,
        _config(),
        on_trace=lambda t: finished.append(t.problem.id),
    )
    return traces, finished, generator


def test_one_engine_call_with_the_program_prompt(
    run: tuple[list[Trace], list[str], ScriptedGenerator],
) -> None:
    _, finished, generator = run
    assert generator.calls == [2]
    request = generator.batches[0][0]
    # the strategy's own prompt, not the run's chain-of-thought one
    assert request.messages is not None and "```python" in request.messages[0].content
    assert finished == ["eggs", "robe"]
    # and the manifest hashes that prompt, not the benchmark's
    (used,) = ProgramAided().prompts(_config())
    assert used.name == "math_program" and request.messages == used.render(PROBLEMS[0])


def test_printed_answers_are_checked_and_voted(
    run: tuple[list[Trace], list[str], ScriptedGenerator],
) -> None:
    traces, _, _ = run
    eggs, robe = traces
    assert [v.status for v in eggs.samples] == ["correct", "correct", "incorrect", "incorrect"]
    assert eggs.clusters[0] == eggs.clusters[1] >= 0 and eggs.clusters[2:] == [-1, -1]
    assert eggs.prediction == "9" and eggs.verdict.is_correct
    assert eggs.samples[0].details["printed"] == "9"
    # the answer is the last printed line, whatever the program printed before it
    assert robe.samples[1].details["printed"] == "3.0" and robe.samples[1].is_correct
    assert robe.samples[3].answer == "4"


def test_failed_programs_are_samples_without_an_answer_with_their_error(
    run: tuple[list[Trace], list[str], ScriptedGenerator],
) -> None:
    traces, _, _ = run
    eggs, robe = traces
    crash, hang = eggs.samples[2], eggs.samples[3]
    assert crash.answer is None and "ZeroDivisionError" in crash.feedback
    assert crash.details["sandbox_status"] == "nonzero_exit"
    assert hang.answer is None and hang.details["sandbox_status"] == "timeout"
    assert robe.samples[0].answer is None and robe.samples[0].status == "incorrect"
    assert robe.samples[2].feedback == "program printed nothing"
    # robe: 3.0 and 4 each once; the tie goes to the answer seen first
    assert robe.prediction == "3.0" and robe.verdict.is_correct


def test_usage_is_one_call_and_one_check_per_sample(
    run: tuple[list[Trace], list[str], ScriptedGenerator],
) -> None:
    traces, _, _ = run
    for trace in traces:
        completions = trace.steps[0].completions
        assert trace.usage.engine_calls == 1
        assert trace.usage.verifier_calls == 4
        assert trace.usage.prompt_tokens == completions[0].prompt_tokens > 0
        assert trace.usage.completion_tokens == sum(c.completion_tokens for c in completions)


def test_verifiers_that_run_the_completion_as_code_are_refused() -> None:
    for verifier in (ProgramAidedMathVerifier(workers=1), UnitTestVerifier()):
        assert verifier.runs_completion_as_code
        # bare, and behind the wrappers `--ray` and `reasoner serve` put around a verifier
        wrapped = (verifier, ray_verifier(verifier, RaySettings()), ReferenceFreeVerifier(verifier))
        try:
            for checker in wrapped:
                with pytest.raises(ConfigError, match=f"not {verifier.name!r}"):
                    ProgramAided().run(PROBLEMS, ScriptedGenerator(_script), checker, _config())
        finally:
            verifier.close()


def test_bad_options_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.options\.prompt"):
        ProgramAided().validate(_config(prompt="no-such-prompt"))
    with pytest.raises(ConfigError, match=r"strategy\.options\.workers"):
        ProgramAided().validate(_config(workers=0))
    with pytest.raises(ConfigError, match=r"unknown key 'strategy\.options\.timeout'"):
        ProgramAided().validate(_config(timeout=3))
    with pytest.raises(ConfigError, match="temperature"):
        ProgramAided().validate(_config(n=4, temperature=0.0))
    with pytest.raises(ConfigError, match="budget_tokens"):
        ProgramAided().validate(
            StrategyConfig(load_prompt("math_cot"), SamplingParams(), budget=Budget(tokens=10))
        )


def test_mixed_pal_and_cot_voting_is_one_engine_call_and_one_vote(
    math_verifier: MathAnswerVerifier,
) -> None:
    """PAL + chain-of-thought self-consistency: the robe problem's programs give 3 once (and
    4 once), so with two CoT answers of 4 the mixed vote is 4; programs alone would be a tie."""
    cot = {
        "eggs": ["So 9 are left. The answer is \\boxed{9}."] * 2,
        "robe": ["2 + 2 = 4. The answer is \\boxed{4}.", "The answer is \\boxed{4}."],
    }

    def script(request: GenerationRequest, call: int) -> list[str]:
        assert request.messages is not None
        question = request.messages[-1].content
        problem = next(p for p in PROBLEMS if p.question == question)
        if "```python" in request.messages[0].content:
            return PROGRAMS[problem.id][: request.sampling.n]
        return cot[problem.id][: request.sampling.n]

    generator = ScriptedGenerator(script)
    eggs, robe = ProgramAided().run(PROBLEMS, generator, math_verifier, _config(cot_n=2))
    assert generator.calls == [4]  # 2 problems x (programs, CoT) in one call
    assert [len(step.completions) for step in robe.steps] == [4, 2]
    assert len(robe.clusters) == 6 and robe.prediction == "4"
    assert eggs.prediction is not None and eggs.verdict.status == "correct"
    assert robe.usage.engine_calls == 1 and robe.usage.verifier_calls == 6
    names = [p.name for p in ProgramAided().prompts(_config(cot_n=2))]
    assert names == ["math_program", "math_cot"]
