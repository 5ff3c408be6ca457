"""fol-prover: reading the problems, deciding translations with the real provers, voting,
repairing failed translations (control flow with a scripted generator), error rates and the
SFT export; end to end on the real engine in the slow tier."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from _counting_generator import CountingGenerator
from _scripted_generator import ScriptedGenerator

from reasoner.errors import ConfigError
from reasoner.prompts import load_prompt
from reasoner.runner.benchmarks import load_benchmark
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.runner.metrics import summarize
from reasoner.strategies.base import Budget, StrategyConfig
from reasoner.strategies.execute_vote import Outcome, majority
from reasoner.strategies.fol_prover import (
    FOLProver,
    Options,
    error_rates,
    label_answer,
    split_problem,
)
from reasoner.strategies.sft_export import sft_records
from reasoner.types import GenerationRequest, Problem, SamplingParams, Trace
from reasoner.verifiers.choice import ChoiceVerifier
from reasoner.verifiers.fol import FOLVerifier


def first_problems(data_dir: Path, benchmark: str, count: int) -> list[Problem]:
    spec = load_benchmark(benchmark)
    dataset = load_dataset(load_manifest(spec.dataset), spec.split, str(data_dir), False)
    return dataset.problems[:count]


def translation(premises: list[str], conclusion: str) -> str:
    return "Premises:\n" + "\n".join(premises) + f"\nConclusion:\n{conclusion}"


GOOD = translation(["∀x (Red(x) → Kind(x))", "Red(lion)"], "Kind(lion)")  # True
NEGATED = translation(["∀x (Red(x) → ¬Kind(x))", "Red(lion)"], "Kind(lion)")  # False
OPEN = translation(["Red(lion)"], "Kind(lion)")  # Uncertain
BROKEN = translation(["∀x (Red(x) → Kind(x)", "Red(lion)"], "Kind(lion)")
CONTRADICTORY = translation(["Red(lion)", "¬Red(lion)"], "Kind(lion)")


def folio_problem(label: str = "True") -> Problem:
    return Problem(
        "folio-1",
        "Premises: ...",
        label,
        {"premises": ["All red things are kind.", "The lion is red."], "conclusion": "Kind."},
    )


def mc_problem(answer: str = "A", options: tuple[str, ...] = ("A) True", "B) False")) -> Problem:
    question = "The lion is red.\n\nQuestion: Is the following statement true or false? X.\n\n"
    return Problem(
        "mc-1", question + "Options:\n" + "\n".join(options), answer, {"options": list(options)}
    )


def run(
    problems: list[Problem],
    script: Any,
    verifier: Any,
    n: int = 3,
    budget: Budget | None = None,
    **options: Any,
) -> tuple[list[Trace], ScriptedGenerator, list[str]]:
    generator = ScriptedGenerator(script)
    finished: list[str] = []
    traces = FOLProver().run(
        problems,
        generator,
        verifier,
        StrategyConfig(
            load_prompt("logic_label"),
            SamplingParams(temperature=0.7, max_tokens=256),
            n=n,
            options=options,
            budget=budget or Budget(),
        ),
        on_trace=lambda t: finished.append(t.problem.id),
    )
    return traces, generator, finished


# --- reading the problems ----------------------------------------------------------------------


def test_premises_and_statement_are_read_from_each_benchmark(data_dir: Path) -> None:
    (folio,) = first_problems(data_dir, "folio", 1)
    premises, statement = split_problem(folio)
    assert premises == [p.strip() for p in folio.metadata["premises"]]
    assert statement == folio.metadata["conclusion"].strip()
    (proofwriter,) = first_problems(data_dir, "proofwriter", 1)
    premises, statement = split_problem(proofwriter)
    assert statement == "The bear visits the lion."
    assert premises[0] == "The bear does not chase the lion." and len(premises) > 10
    assert all("Question" not in p and "Options" not in p for p in premises)
    (prontoqa,) = first_problems(data_dir, "prontoqa", 1)
    premises, statement = split_problem(prontoqa)
    assert statement == "Max is sour." and premises[-1] == "Max is a yumpus."
    rendered = FOLProver().first_messages(proofwriter, Options())[-1].content
    assert rendered.rstrip().endswith("Statement: The bear visits the lion.\nTranslation:")


def test_labels_are_written_in_the_benchmarks_answer_format() -> None:
    assert label_answer(folio_problem(), "Uncertain") == "Uncertain"
    three = mc_problem(options=("A) True", "B) False", "C) Unknown"))
    assert [label_answer(three, lab) for lab in ("True", "False", "Uncertain")] == ["A", "B", "C"]
    # ProntoQA has no Unknown option: an undecided statement is no answer
    assert label_answer(mc_problem(), "Uncertain") is None


def test_majority_breaks_ties_by_the_first_vote() -> None:
    assert majority(["B", None, "A", "A", "B"]) == "B"
    assert majority(["A", "B", "B"]) == "B"
    assert majority([None, None]) is None


# --- deciding one translation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer", "error"),
    [
        (GOOD, "A", None),
        (NEGATED, "B", None),
        (OPEN, None, "no_option"),
        (BROKEN, None, "parse_error"),
        (CONTRADICTORY, None, "inconsistent_premises"),
        ("The answer is True.", None, "no_formalisation"),
    ],
)
def test_a_translation_is_decided_by_the_prover(text: str, answer: str, error: str) -> None:
    outcome = FOLProver().execute(mc_problem(), text, Options())
    assert (outcome.answer, outcome.error) == (answer, error)
    assert not outcome.infrastructure
    if error == "parse_error":  # the feedback names the formula, not only its number
        assert "premise 1 `∀x (Red(x) → Kind(x)`" in outcome.message


def test_a_translation_of_something_else_is_sent_back() -> None:
    example = translation(["Red(lion)", "¬Eats(mouse, lion)", "∀x (Red(x) → Kind(x))",
                           "∀x (Eats(x, lion) ∧ Kind(x) → Big(x))", "∀x (Kind(x) → Rough(x))",
                           "∀x (Rough(x) → ¬Cold(x))"], "Cold(lion)")  # fmt: skip
    copied = FOLProver().execute(mc_problem(), example, Options())
    assert copied.error == "copied_example" and "not the examples" in copied.message
    elsewhere = translation(["∀x (Zorp(x) → Blicket(x))", "Zorp(sam)"], "Blicket(sam)")
    assert FOLProver().execute(mc_problem(), elsewhere, Options()).error == "ungrounded"


@pytest.mark.parametrize("prover", ["e", "prover9", "z3"])
def test_every_prover_decides_alike(prover: str) -> None:
    options = Options(prover=prover)
    assert FOLProver().execute(folio_problem(), NEGATED, options).answer == "False"
    assert FOLProver().execute(folio_problem(), OPEN, options).answer == "Uncertain"


# --- the loop -----------------------------------------------------------------------------------


def test_failed_translations_are_repaired_with_the_error_in_one_call_per_round() -> None:
    folio, mc = folio_problem("True"), mc_problem("A")

    def script(request: GenerationRequest, call: int) -> list[str]:
        messages = request.messages or ()
        if call == 0:
            if "All red things" in messages[-1].content:  # FOLIO: 2 True, 1 False
                return [GOOD, NEGATED, GOOD]
            return [BROKEN, "I think it is true.", GOOD]  # repaired later
        last = messages[-1].content
        if "does not parse" in last:
            return [GOOD]
        return ["still no formulas"] if call == 1 else [NEGATED]

    traces, generator, finished = run([folio, mc], script, FOLVerifier(), max_refine_rounds=2)
    assert generator.calls == [2, 2, 1]
    assert finished == ["folio-1", "mc-1"]  # FOLIO was written out before any repair ran
    # a repair request: the first chat, the failed attempt, then the error
    repair = generator.batches[1][0].messages or ()
    assert repair[-2].role == "assistant" and repair[-2].content == BROKEN
    assert "premise 1 `∀x (Red(x) → Kind(x)` does not parse" in repair[-1].content

    folio_trace, mc_trace = traces
    assert folio_trace.prediction == "True" and folio_trace.verdict.status == "correct"
    assert folio_trace.verdict.details["votes"] == {"True": 2, "False": 1}
    assert folio_trace.usage.engine_calls == 1 and len(folio_trace.steps) == 1
    # mc: chains end GOOD (repair 1), NEGATED (repair 2), GOOD -> A by 2 to 1
    assert mc_trace.prediction == "A" and mc_trace.verdict.status == "correct"
    assert mc_trace.verdict.details["repairs"] == 3
    assert [s.verdicts[0].status for s in mc_trace.steps[1:]] == ["correct", "error", "incorrect"]
    assert mc_trace.usage.engine_calls == 3 and mc_trace.usage.verifier_calls == 6
    assert [(n["chain"], n["round"], n["parent"]) for n in mc_trace.tree] == [
        (0, 0, None), (1, 0, None), (2, 0, None), (0, 1, 0), (1, 1, 1), (1, 2, 4),
    ]  # fmt: skip

    rates = error_rates([t.to_dict() for t in traces])
    assert rates["first_round"]["translations"] == 6
    assert rates["first_round"]["parse_error_rate"] == pytest.approx(2 / 6)
    assert rates["after_repair"]["parse_error_rate"] == 0.0
    assert rates["problems_undecided"] == 0


def test_no_repair_when_rounds_or_budget_run_out() -> None:
    def script(request: GenerationRequest, call: int) -> list[str]:
        return [BROKEN] * request.sampling.n

    # no fallback either: switched off, or the budget is spent
    for kwargs in ({"max_refine_rounds": 0, "fallback": "none"}, {"budget": Budget(calls=1)}):
        traces, generator, _ = run([mc_problem()], script, ChoiceVerifier(), n=2, **kwargs)
        assert generator.calls == [1]
        (trace,) = traces
        assert trace.prediction is None and trace.verdict.status == "incorrect"
        assert "does not parse" in trace.verdict.feedback
        assert [v.status for v in trace.samples] == ["error", "error"]
        assert error_rates([trace.to_dict()])["problems_undecided"] == 1
        assert trace.verdict.details["answered_by"] is None


def test_undecided_problems_fall_back_to_chain_of_thought_in_one_call() -> None:
    """Logic-LM's backup: every problem no translation decided gets one greedy CoT answer from
    the run's prompt, all in one engine call after the repairs; decided problems get none."""
    decided = mc_problem("A")
    stuck = [dataclasses.replace(mc_problem("B"), id=f"stuck-{i}") for i in range(2)]

    def script(request: GenerationRequest, call: int) -> list[str]:
        text = (request.messages or ())[-1].content
        if "Translation:" not in text and "does not parse" not in text:  # the CoT prompt
            assert request.sampling.temperature == 0.0 and request.sampling.n == 1
            return ["Step by step, it is false. The answer is (B)."]
        if call == 0 and not first_request:  # the decided problem's programs
            first_request.append(request)
            return [GOOD] * request.sampling.n
        return [BROKEN] * request.sampling.n

    first_request: list[GenerationRequest] = []

    traces, generator, finished = run(
        [decided, *stuck], script, ChoiceVerifier(), n=2, max_refine_rounds=1
    )
    assert generator.calls == [3, 4, 2]  # programs, repairs of the stuck ones, one CoT call
    assert all("Translation:" not in (r.messages or ())[-1].content for r in generator.batches[2])
    assert finished == ["mc-1", "stuck-0", "stuck-1"]
    first, *rest = traces
    assert first.verdict.details["answered_by"] == "program" and len(first.steps) == 1
    for trace in rest:
        assert trace.prediction == "B" and trace.verdict.status == "correct"
        assert trace.verdict.details["answered_by"] == "fallback"
        assert trace.verdict.details["decided"] == 0
        # round 0, one repair per chain, the CoT answer
        assert trace.usage.engine_calls == 3 and len(trace.steps) == 1 + 2 + 1
        assert trace.steps[-1].verdicts[0].status == "correct"
    summary = summarize([t.to_dict() for t in traces])
    assert summary["answered_by"] == {"program": 1, "fallback": 2, "fallback_correct": 2}
    assert summary["no_answer"] == 0


def test_a_missing_solver_is_not_papered_over_by_the_fallback() -> None:
    class NoProver(FOLProver):
        def execute(self, problem: Problem, text: str, options: Any) -> Outcome:
            return Outcome(None, "missing", "prover not installed", infrastructure=True)

    generator = ScriptedGenerator(lambda request, call: [GOOD] * request.sampling.n)
    config = StrategyConfig(load_prompt("logic_label"), SamplingParams(), n=2)
    (trace,) = NoProver().run([mc_problem()], generator, ChoiceVerifier(), config)
    assert generator.calls == [1]
    assert trace.verdict.status == "error" and trace.verdict.details["answered_by"] is None


def test_the_final_verdict_is_the_run_verifiers() -> None:
    def script(request: GenerationRequest, call: int) -> list[str]:
        return [NEGATED]

    (trace,), _, _ = run([mc_problem("A")], script, ChoiceVerifier(), n=1, max_refine_rounds=0)
    assert trace.prediction == "B" and trace.verdict.status == "incorrect"
    assert trace.verdict.feedback == "expected (A), got (B)"
    assert trace.samples[0].details["decision"]["label"] == "False"


def test_options_are_checked_before_a_model_is_loaded() -> None:
    config = StrategyConfig(load_prompt("logic_label"), SamplingParams(), options={"provr": "z3"})
    with pytest.raises(ConfigError, match="provr"):
        FOLProver().validate(config)
    bad_prompt = StrategyConfig(
        load_prompt("logic_label"), SamplingParams(), options={"prompt": "nope"}
    )
    with pytest.raises(ConfigError, match="nope"):
        FOLProver().validate(bad_prompt)


def test_verified_translations_become_sft_records() -> None:
    def script(request: GenerationRequest, call: int) -> list[str]:
        return [BROKEN, GOOD] if call == 0 else [GOOD]

    (trace,), _, _ = run([mc_problem("A")], script, ChoiceVerifier(), n=2)
    records = sft_records([trace])
    # GOOD once (deduplicated), under the first prompt, repaired or not
    assert [r["completion"] for r in records] == [GOOD]
    first = trace.steps[0].request.messages or ()
    assert records[0]["messages"] == [{"role": m.role, "content": m.content} for m in first]
    with_context = sft_records([trace.to_dict()], with_repair_context=True)
    assert len(with_context) == 2 and with_context[1]["messages"][-2]["content"] == BROKEN


# --- end to end on the real engine ---------------------------------------------------------------


@pytest.mark.slow
def test_fol_prover_runs_end_to_end_through_run_eval(
    tmp_path: Path, data_dir: Path, vllm_generator: Any
) -> None:
    from reasoner.config import EvalConfig, build_config
    from reasoner.runner.evaluate import run_eval
    from reasoner.runner.run_folder import RunFolder

    counting = CountingGenerator(vllm_generator)
    config = build_config(
        EvalConfig,
        {},
        [
            "benchmark=folio",
            "model.name=smollm2-135m-instruct",
            "strategy.name=fol-prover",
            "strategy.n=2",
            "strategy.options.max_refine_rounds=1",
            "limit=3",
            "sampling.max_tokens=128",
            f"data_dir={data_dir}",
            f"out={tmp_path / 'run'}",
            "progress=false",
        ],
    )
    summary = run_eval(config, generator=counting)
    rows = RunFolder(tmp_path / "run").load_results()
    assert summary["problems"] == 3 and len(rows) == 3
    # round 0: every problem's 2 translations in one call; then one call per repair round,
    # holding exactly the chains whose first translation failed
    assert counting.calls[0] == 3 and all(r.sampling.n == 2 for r in counting.requests[:3])
    failed_first = sum(
        1 for row in rows for node in row["tree"] if node["round"] == 0 and node["error"]
    )
    # and, last, one call holding every problem that no translation decided (the CoT fallback)
    fell_back = sum(1 for row in rows if row["verdict"]["details"].get("fallback") == "cot")
    assert counting.calls[1:] == [c for c in (failed_first, fell_back) if c]
    for row in rows:
        assert len(row["tree"]) == 2 + sum(n["round"] == 1 for n in row["tree"])
        assert row["verdict"]["status"] in ("correct", "incorrect")
        decided = [n["answer"] for n in row["tree"] if n["answer"] is not None]
        if decided:
            assert row["verdict"]["details"]["answered_by"] == "program"
        else:  # answered by the fallback's chain of thought, or not at all
            assert row["verdict"]["details"].get("fallback") == "cot"
    rates = error_rates(rows)
    assert rates["first_round"]["translations"] == 6
    assert 0.0 <= rates["first_round"]["parse_error_rate"] <= 1.0
