"""Blind means blind: `blind()` strips every gold-bearing field a manifest declares, verifiers
declare whether they read the gold, and strategies refuse a gold-reading checker as a scorer or
as feedback unless the run is declared an oracle (real data through the real loader)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from reasoner.cli import main
from reasoner.config import EvalConfig, build_config
from reasoner.errors import ConfigError
from reasoner.models.base import Generator
from reasoner.prompts import load_prompt
from reasoner.runner.datasets import DatasetManifest, load_dataset, load_manifest
from reasoner.runner.evaluate import plan_eval
from reasoner.runner.report import write_report
from reasoner.strategies.base import StrategyConfig, blind
from reasoner.strategies.best_of_n import BestOfN
from reasoner.strategies.self_refine import SelfRefine
from reasoner.types import Completion, GenerationRequest, Problem, SamplingParams, Verdict
from reasoner.verifiers import VERIFIERS
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.code_exec import UnitTestVerifier
from reasoner.verifiers.fol.verifier import FOLVerifier


def _problems(name: str, split: str, data_dir: Path) -> list[Problem]:
    return load_dataset(load_manifest(name), split, str(data_dir)).problems


def _label(text: str) -> Completion:
    return Completion(f"The answer is {text}.", "stop", 0, 0)


# --- FOLIO and the fol verifier ---------------------------------------------------------------


@pytest.fixture(scope="module")
def folio_six(data_dir: Path) -> list[Problem]:
    problems = _problems("folio", "validation", data_dir)
    with_formulas = [
        p for p in problems if p.metadata.get("premises_fol") and p.metadata.get("conclusion_fol")
    ]
    return with_formulas[:6]


def test_folio_declares_its_reference_formalisations_gold(folio_six: list[Problem]) -> None:
    assert len(folio_six) == 6
    for problem in folio_six:
        assert set(problem.gold_fields) == {"premises_fol", "conclusion_fol"}
        hidden = blind(problem)
        assert hidden.answer is None
        assert "premises_fol" not in hidden.metadata and "conclusion_fol" not in hidden.metadata
        # what is not gold stays: the premises and conclusion in prose are the question
        assert hidden.metadata["premises"] == problem.metadata["premises"]
        assert hidden.question == problem.question and hidden.id == problem.id


def test_fol_verifier_cannot_grade_six_blinded_folio_problems(folio_six: list[Problem]) -> None:
    verifier = FOLVerifier()
    answer_only = [dataclasses.replace(p, answer=None) for p in folio_six]
    # clearing only the answer (the old blind) leaves the key: the verifier derives the gold
    # label from the reference formulas and grades five of the six (issue 15)
    leaked = [
        verifier.verify(p, _label(str(g.answer)))
        for p, g in zip(answer_only, folio_six, strict=True)
    ]
    assert sum(v.status != "error" for v in leaked) >= 5
    for problem in folio_six:
        # with the gold the verifier grades, so the completions below are really gradable
        assert verifier.verify(problem, _label(str(problem.answer))).is_correct
        for label in ("True", "False", "Uncertain"):
            verdict = verifier.verify(blind(problem), _label(label))
            assert verdict.status == "error", (problem.id, label, verdict)
            assert "neither a gold label nor gold formulas" in verdict.feedback


# --- a unit-test problem ----------------------------------------------------------------------

UNIT_TEST_PROBLEM = Problem(
    "add",
    "Write a function add(a, b) that returns a + b.",
    None,
    {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "entry_point": "add"},
    gold_fields=("tests",),
)


def test_unit_tests_are_gold_and_the_blinded_problem_cannot_be_graded() -> None:
    code = Completion("```python\ndef add(a, b):\n    return a + b\n```", "stop", 0, 0)
    with UnitTestVerifier() as verifier:
        assert verifier.verify(UNIT_TEST_PROBLEM, code).is_correct
        hidden = blind(UNIT_TEST_PROBLEM)
        assert hidden.metadata == {"entry_point": "add"}
        assert verifier.verify(hidden, code).status == "error"


# --- SVAMP and ASDiv through the real loader --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "gold_key", "type_key"),
    [("svamp", "equation", "type"), ("asdiv", "formula", "solution_type")],
)
def test_math_word_problem_solutions_are_stripped(
    name: str, gold_key: str, type_key: str, data_dir: Path
) -> None:
    problems = _problems(name, "test", data_dir)
    assert all(gold_key in p.metadata for p in problems[:50])
    for problem in problems[:50]:
        hidden = blind(problem)
        assert hidden.answer is None and hidden.gold_fields == ()
        assert gold_key not in hidden.metadata and type_key not in hidden.metadata
        assert hidden.question == problem.question
    # the original is untouched: the run's verifier still grades with it
    assert problems[0].answer is not None and gold_key in problems[0].metadata


def test_a_gold_field_must_be_a_metadata_key() -> None:
    with pytest.raises(ValidationError, match=r"gold_fields \['Equation'\] are not metadata keys"):
        DatasetManifest.model_validate(
            {"name": "x", "metadata": {"equation": "Equation"}, "gold_fields": ["Equation"]}
        )


def test_a_problem_read_back_from_results_keeps_its_gold_fields() -> None:
    row = json.loads(json.dumps(dataclasses.asdict(UNIT_TEST_PROBLEM)))
    problem = Problem(**row)
    assert problem.gold_fields == ("tests",) and "tests" not in blind(problem).metadata


# --- the Verifier contract and the strategies -------------------------------------------------


def test_verifiers_declare_whether_they_read_gold() -> None:
    readers = {name for name, cls in VERIFIERS.items() if cls.reads_gold}
    assert readers == {"math", "python-math", "unit-tests", "fol", "choice"}


class RecordingChecker(Verifier):
    """Scores by its table; records every problem it is shown."""

    name = "recording"

    def __init__(self, reads_gold: bool) -> None:
        self.reads_gold = reads_gold
        self.seen: list[Problem] = []

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        self.seen.append(problem)
        return Verdict("correct", 1.0, "ok")


class FixedGenerator(Generator):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        return [[_label("True")] * r.sampling.n for r in requests]


def _config(scorer: Verifier | None, oracle: bool = False, **options: object) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("math_cot"),
        SamplingParams(temperature=0.7, max_tokens=16),
        n=2,
        options=options,
        scorer=scorer,
        oracle=oracle,
    )


def test_best_of_n_refuses_a_gold_reading_scorer_unless_oracle(folio_six: list[Problem]) -> None:
    gold_reader = RecordingChecker(reads_gold=True)
    with pytest.raises(ConfigError, match=r"strategy\.oracle=true"):
        BestOfN().run(folio_six[:2], FixedGenerator(), FOLVerifier(), _config(gold_reader))  # type: ignore[arg-type]
    assert gold_reader.seen == []
    # a blind scorer sees the blinded problems
    blind_scorer = RecordingChecker(reads_gold=False)
    BestOfN().run(folio_six[:2], FixedGenerator(), FOLVerifier(), _config(blind_scorer))  # type: ignore[arg-type]
    assert blind_scorer.seen and all(
        p.answer is None and "premises_fol" not in p.metadata for p in blind_scorer.seen
    )
    # an oracle run shows its scorer the gold
    BestOfN().run(folio_six[:2], FixedGenerator(), FOLVerifier(), _config(gold_reader, True))  # type: ignore[arg-type]
    assert gold_reader.seen and all(p.answer is not None for p in gold_reader.seen)


def test_self_refine_refuses_gold_reading_feedback_unless_oracle(
    folio_six: list[Problem],
) -> None:
    config = dataclasses.replace(_config(None, feedback="verifier"), n=1)
    with pytest.raises(ConfigError, match=r"'fol' verifier grades against the gold"):
        SelfRefine().run(folio_six[:1], FixedGenerator(), FOLVerifier(), config)  # type: ignore[arg-type]
    traces = SelfRefine().run(
        folio_six[:1],
        FixedGenerator(),  # type: ignore[arg-type]
        FOLVerifier(),
        dataclasses.replace(config, oracle=True, options={"feedback": "verifier", "max_rounds": 0}),
    )
    assert len(traces) == 1


def _eval_config(tmp_path: Path, data_dir: Path, *overrides: str) -> EvalConfig:
    return build_config(
        EvalConfig,
        {},
        [
            "benchmark=folio",
            "model.name=smollm2-135m-instruct",
            "model.backend=transformers",
            "strategy.name=best-of-n",
            "strategy.n=2",
            "strategy.scorer.name=fol",
            "limit=2",
            f"data_dir={data_dir}",
            f"out={tmp_path / 'run'}",
            *overrides,
        ],
    )


def test_eval_refuses_a_gold_reading_scorer_before_loading_a_model(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=r"strategy\.scorer 'fol' grades against the gold"):
        plan_eval(_eval_config(tmp_path, data_dir))
    assert plan_eval(
        _eval_config(tmp_path, data_dir, "strategy.oracle=true")
    ).config.strategy.oracle
    argv = ["eval", "folio", "--strategy", "best-of-n", "--n", "2", "--backend", "transformers"]
    argv += ["--scorer", "fol", "--limit", "1", "--data-dir", str(data_dir)]
    argv += ["--out", str(tmp_path / "cli")]
    assert main(argv) == 2
    assert "set strategy.oracle=true" in capsys.readouterr().err
    assert not (tmp_path / "cli" / "results.jsonl").exists()


def test_report_labels_an_oracle_run(tmp_path: Path) -> None:
    def run(name: str, oracle: bool) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        config = {"benchmark": "folio", "strategy": {"name": "best-of-n", "n": 2, "oracle": oracle}}
        (folder / "config.yaml").write_text(json.dumps(config))
        (folder / "results.jsonl").write_text("")
        summary = {"benchmark": "folio", "strategy": "best-of-n", "n": 2, "problems": 0}
        (folder / "summary.json").write_text(json.dumps({**summary, "oracle": oracle}))
        return folder

    files = write_report([run("blind", False), run("oracle", True)], tmp_path / "report")
    text = files.markdown.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| strategy.oracle=")]
    assert len(rows) == 2
    assert "ORACLE" in next(r for r in rows if "oracle=true" in r)
    assert "ORACLE" not in next(r for r in rows if "oracle=false" in r)
    assert "scorers or feedback saw the gold answer" in text


def test_tree_searches_refuse_gold_reading_scorers_and_oracle_rewards() -> None:
    from reasoner.strategies.beam_search import BeamSearch
    from reasoner.strategies.mcts import MCTS
    from reasoner.strategies.tree import score_texts, start_searches

    problem = Problem("p", "What is 2 + 3?", "5", {"steps": "2+3=5"}, gold_fields=("steps",))
    beam = dataclasses.replace(
        _config(RecordingChecker(reads_gold=True)), options={"beam_width": 2}
    )
    with pytest.raises(ConfigError, match=r"beam-search scorer.*strategy\.oracle=true"):
        BeamSearch().run([problem], None, None, beam)  # type: ignore[arg-type]
    rollout = {"evaluation": "rollout", "rollout_reward": "verifier"}
    mcts = StrategyConfig(load_prompt("math_cot"), SamplingParams(temperature=0.7), options=rollout)
    with pytest.raises(ConfigError, match=r"rollout_reward=verifier .*strategy\.oracle=true"):
        MCTS().run([problem], None, None, mcts)  # type: ignore[arg-type]

    class Chat:
        def render_chat(self, messages: object) -> str:
            return "prompt"

    for oracle, expected in ((False, None), (True, "5")):
        config = dataclasses.replace(mcts, oracle=oracle)
        (search,) = start_searches([problem], Chat(), config, "\n\n")  # type: ignore[arg-type]
        scorer = RecordingChecker(reads_gold=False)
        score_texts(scorer, [(search, "2 + 3 = 5")])
        assert scorer.seen[0].answer == expected
        assert ("steps" in scorer.seen[0].metadata) is oracle


def test_an_oracle_run_is_labelled_in_its_summary_and_report(
    tmp_path: Path, data_dir: Path
) -> None:
    from _scripted_generator import ScriptedGenerator

    from reasoner.runner.evaluate import run_eval

    generator = ScriptedGenerator(lambda r, call: ["The answer is True."] * r.sampling.n)
    config = _eval_config(tmp_path, data_dir, "strategy.oracle=true", "progress=false")
    summary = run_eval(config, generator=generator)
    assert summary["oracle"] is True and summary["problems"] == 2
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["oracle"] is True
    text = write_report([tmp_path / "run"], tmp_path / "report").markdown.read_text()
    assert "best-of-n (n=2) ORACLE" in text
