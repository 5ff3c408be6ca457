"""`Strategy.run`, written once in the base: traces reach `on_trace` as each problem finishes
and come back in problem order, whatever order the strategy finished them in."""

from __future__ import annotations

from typing import ClassVar

from _scripted_generator import ScriptedGenerator

from reasoner.prompts import load_prompt
from reasoner.strategies.base import Batch, Strategy, StrategyConfig
from reasoner.types import Problem, SamplingParams, Trace, Usage, Verdict
from reasoner.verifiers.math_answer import MathAnswerVerifier

PROBLEMS = [Problem(id=name, question=f"{name}?", answer="1") for name in ("a", "b", "c")]
CONFIG = StrategyConfig(load_prompt("math_cot"), SamplingParams())


class LastFirst(Strategy):
    """Finishes its problems last to first and records, as it finishes each, which traces
    `on_trace` had been given by then."""

    name: ClassVar[str] = "last-first"
    default_temperature: ClassVar[float] = 0.0

    def __init__(self, handed_on: list[str]) -> None:
        self.handed_on = handed_on
        self.seen_at_finish: list[list[str]] = []

    def solve(self, batch: Batch) -> None:
        for index in reversed(range(len(batch.problems))):
            problem = batch.problems[index]
            batch.finish(index, Trace(problem, [], None, Verdict("incorrect", 0.0), Usage()))
            self.seen_at_finish.append(list(self.handed_on))


def _run(strategy: LastFirst, problems: list[Problem], record: bool) -> list[Trace]:
    with MathAnswerVerifier() as verifier:
        return strategy.run(
            problems,
            ScriptedGenerator(lambda request, call: []),
            verifier,
            CONFIG,
            on_trace=(lambda t: strategy.handed_on.append(t.problem.id)) if record else None,
        )


def test_traces_reach_on_trace_as_they_finish_and_return_in_problem_order() -> None:
    strategy = LastFirst([])
    traces = _run(strategy, PROBLEMS, record=True)
    # each trace was handed on at once, before the next problem finished
    assert strategy.seen_at_finish == [["c"], ["c", "b"], ["c", "b", "a"]]
    assert [t.problem.id for t in traces] == ["a", "b", "c"]


def test_run_without_on_trace_still_returns_every_trace() -> None:
    strategy = LastFirst([])
    traces = _run(strategy, PROBLEMS, record=False)
    assert [t.problem.id for t in traces] == ["a", "b", "c"]
    assert strategy.handed_on == []
