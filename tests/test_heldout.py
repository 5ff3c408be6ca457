"""Held-out stays held out: deliberate overlaps between training and held-out problems are
refused (iterate, train) or warned about (eval with an adapter), before any model loads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from reasoner.cli import main
from reasoner.config import EvalConfig, build_config
from reasoner.errors import ConfigError, DatasetError
from reasoner.loops.config import IterateConfig
from reasoner.loops.iterate import run_iterate
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.runner.evaluate import plan_eval
from reasoner.runner.heldout import (
    TRAIN_QUESTIONS_FILE,
    HeldoutOverlapWarning,
    find_overlap,
    normalize_question,
    question_hash,
    question_hashes,
    read_question_hashes,
    require_disjoint,
    write_question_hashes,
)
from reasoner.training.config import DataSettings
from reasoner.training.data import (
    check_heldout,
    dpo_pairs_from_runs,
    records_from_settings,
    slice_by_problem,
)
from reasoner.training.run_folder import TrainingRun
from reasoner.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    Problem,
    SamplingParams,
    Step,
    Trace,
    Usage,
    Verdict,
)

# --- normalisation ------------------------------------------------------------------------------


def test_formatting_does_not_hide_a_copy() -> None:
    question = "Janet's ducks lay 16 eggs per day. How many dollars does she make?"
    for variant in (
        "janet's ducks lay 16 eggs per day.  How many dollars does she make?",
        "JANET'S DUCKS LAY 16 EGGS PER DAY\nHOW MANY DOLLARS DOES SHE MAKE",
        "Janet’s ducks lay １６ eggs per day. How many dollars does she make ?",
    ):
        assert question_hash(variant) == question_hash(question), variant
    # punctuation becomes a space, so a decimal point still separates digits
    assert question_hash("It costs $3.5") != question_hash("It costs $35")
    assert normalize_question("  A,b;  C! ") == "a b c"
    assert question_hash("How many eggs?") != question_hash("How many ducks?")


def test_overlap_names_the_shared_questions() -> None:
    train = ["What is 2 + 3?", "What is 4 + 4?", "What is 9 - 1?"]
    heldout = ["what is 4+4", "What is 10 / 2?"]
    overlap = find_overlap(train, question_hashes(heldout))
    assert overlap.count == 1 and overlap.total == 3
    assert overlap.examples == ("What is 4 + 4?",)
    assert not find_overlap(train, question_hashes(["What is 7 * 7?"]))
    with pytest.raises(ConfigError, match=r"1 of the 3 questions of train are also in test"):
        require_disjoint(train, heldout, "train", "test")


def test_hashes_round_trip_through_a_folder(tmp_path: Path) -> None:
    path = write_question_hashes(tmp_path, ["Q one?", "q ONE", "Q two?"])
    assert path.name == TRAIN_QUESTIONS_FILE
    assert read_question_hashes(tmp_path) == {question_hash("Q one?"), question_hash("Q two?")}
    assert read_question_hashes(tmp_path / "nothing") is None


# --- reasoner iterate ---------------------------------------------------------------------------


def _iterate(out: Path, heldout: dict[str, object]) -> IterateConfig:
    return build_config(
        IterateConfig,
        {
            "train_problems": {"benchmark": "gsm8k", "split": "train", "limit": 8},
            "heldout": heldout,
            "model": {"name": "smollm2-135m-instruct", "backend": "transformers"},
            "out": str(out),
        },
    )


def test_iterate_refuses_held_out_problems_it_trains_on(tmp_path: Path, data_dir: Path) -> None:
    train = load_dataset(load_manifest("gsm8k"), "train", str(data_dir)).problems[:8]
    # a user's held-out file: two copies of training questions (one reformatted), one new
    copied = tmp_path / "heldout.jsonl"
    rows = [
        {"question": train[2].question, "answer": "#### 1"},
        {"question": "  " + train[5].question.upper() + " ", "answer": "#### 2"},
        {"question": "A question of its own?", "answer": "#### 3"},
    ]
    copied.write_text("".join(json.dumps(r) + "\n" for r in rows))
    heldout = {
        "benchmark": "gsm8k",
        "dataset": {"path": str(copied), "answer_format": "gsm8k"},
    }
    with pytest.raises(ConfigError, match=r"2 of the 8 questions of train_problems .* heldout"):
        run_iterate(_iterate(tmp_path / "copied", heldout), generator=None)
    # the same split on both sides (row ids repeat across splits; questions do not)
    same = {"benchmark": "gsm8k", "split": "train", "limit": 4}
    with pytest.raises(ConfigError, match=r"4 of the 8 questions"):
        run_iterate(_iterate(tmp_path / "same", same), generator=None)


def test_iterate_cli_refuses_before_loading_a_model(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "loop.yaml"
    config.write_text(
        json.dumps(
            {
                "train_problems": {"benchmark": "gsm8k", "split": "test", "limit": 6},
                "heldout": {"benchmark": "gsm8k", "split": "test", "limit": 3},
                "model": {"name": "no-such-model-is-loaded", "backend": "transformers"},
            }
        )
    )
    code = main(["iterate", "--config", str(config), "--out", str(tmp_path / "loop")])
    assert code == 2
    assert "3 of the 6 questions of train_problems are also in heldout" in capsys.readouterr().err


# --- reasoner train -----------------------------------------------------------------------------

CHAT = (ChatMessage("system", "Solve it."),)


def _trace(problem: Problem, samples: list[tuple[str, str]]) -> Trace:
    messages = (*CHAT, ChatMessage("user", problem.question))
    request = GenerationRequest(messages=messages, sampling=SamplingParams(n=len(samples)))
    return Trace(
        problem=problem,
        steps=[
            Step(
                request,
                [Completion(text, "stop", 10, 5) for text, _ in samples],
                [Verdict(status, float(status == "correct")) for _, status in samples],  # type: ignore[arg-type]
            )
        ],
        prediction=None,
        verdict=Verdict("incorrect", 0.0),
        usage=Usage(),
    )


def _run(folder: Path, traces: list[Trace]) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(t.to_dict()) + "\n" for t in traces))
    return folder


def _pairs_run(tmp_path: Path) -> Path:
    """Three problems, each with 2 correct x 2 wrong = 4 DPO pairs."""
    traces = [
        _trace(
            Problem(pid, f"What is {k} + {k}?", str(2 * k)),
            [
                (f"{2 * k}", "correct"),
                (f"It is {2 * k}.", "correct"),
                (f"{2 * k + 1}", "incorrect"),
                (f"It is {2 * k - 1}.", "incorrect"),
            ],
        )
        for k, pid in ((1, "p1"), (2, "p2"), (3, "p3"))
    ]
    return _run(tmp_path / "run", traces)


def test_dpo_eval_pairs_are_split_by_problem(tmp_path: Path) -> None:
    run = str(_pairs_run(tmp_path))
    # 12 pairs; by record position, skip=6 would cut problem p2's four pairs in half
    held = records_from_settings("dpo", DataSettings(runs=[run], limit=1))
    train = records_from_settings("dpo", DataSettings(runs=[run], skip=1))
    assert {r["id"] for r in held} == {"p1"} and len(held) == 4
    assert {r["id"] for r in train} == {"p2", "p3"} and len(train) == 8
    check_heldout(train, held)  # disjoint: no error
    middle = slice_by_problem(train + held, 1, 1)
    assert {r["id"] for r in middle} == {"p3"}


def test_train_refuses_eval_data_that_shares_questions(tmp_path: Path) -> None:
    run = str(_pairs_run(tmp_path))
    records = records_from_settings("dpo", DataSettings(runs=[run]))
    held = records_from_settings("dpo", DataSettings(runs=[run], skip=2))
    with pytest.raises(ConfigError, match=r"1 of the 3 questions of the training data"):
        check_heldout(records, held)
    # records of a file without a question column are compared by the prompt's last user turn
    stripped = [{k: v for k, v in r.items() if k != "question"} for r in held]
    with pytest.raises(ConfigError, match="eval data"):
        check_heldout(records, stripped)


def test_train_cli_refuses_before_the_run_folder_or_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(_pairs_run(tmp_path))
    out = tmp_path / "train"
    argv = ["train", "dpo", "--model", "no-such-model-is-loaded", "--out", str(out)]
    argv += ["--set", f"data.runs=[{run}]", "--set", f"eval_data.runs=[{run}]"]
    argv += ["--set", "eval_data.limit=1"]
    assert main(argv) == 2
    assert "also in the eval data (eval_data)" in capsys.readouterr().err
    assert not out.exists()  # a corrected config can use the same --out


def test_training_records_its_questions_beside_the_adapter(tmp_path: Path) -> None:
    run = TrainingRun(tmp_path / "train")
    run.prepare({"stage": "sft"})
    run.write_manifest({"stage": "sft"})
    from reasoner.training.data import write_training_questions

    records = records_from_settings("dpo", DataSettings(runs=[str(_pairs_run(tmp_path))]))
    write_training_questions(run.path, records)
    staged = run.path / "adapter.tmp"
    staged.mkdir()
    (staged / "adapter_config.json").write_text("{}")
    run.finish_result(staged, run.adapter_dir, {"stage": "sft"})
    recorded = read_question_hashes(run.adapter_dir)
    assert recorded == {question_hash(f"What is {k} + {k}?") for k in (1, 2, 3)}


def test_reference_solutions_are_matched_on_the_question_not_the_id(tmp_path: Path) -> None:
    # problem "0" of the sampled split has no correct sample; reference row "0" is another
    # problem, and the reference for this question sits at another row
    sampled = Problem("0", "How many legs do 3 cats have?", "12")
    run = _run(tmp_path / "run", [_trace(sampled, [("9", "incorrect"), ("10", "incorrect")])])
    references = {"What is 1 + 1?": "1 + 1 = 2.", "how many legs do 3 cats have": "3 * 4 = 12."}
    pairs = dpo_pairs_from_runs([run], references=references)
    assert {p["chosen"][0]["content"] for p in pairs} == {"3 * 4 = 12."}
    assert dpo_pairs_from_runs([run], references={"What is 1 + 1?": "1 + 1 = 2."}) == []


def test_reference_dataset_lookup_uses_question_text(tmp_path: Path, data_dir: Path) -> None:
    train = load_dataset(load_manifest("gsm8k"), "train", str(data_dir)).problems
    test = load_dataset(load_manifest("gsm8k"), "test", str(data_dir)).problems
    # a GSM8K *test* problem sampled with id "3": train row "3" is a different problem
    sampled = Problem("3", test[3].question, test[3].answer)
    assert train[3].question != sampled.question
    run = _run(tmp_path / "run", [_trace(sampled, [("0", "incorrect")])])
    settings = DataSettings(runs=[str(run)], reference_dataset="gsm8k", data_dir=str(data_dir))
    with pytest.raises(DatasetError, match="no training records"):
        records_from_settings("dpo", settings)  # the test question has no train solution
    # sampled from train row 7 under id "x": its own solution is found by its question
    own = Problem("x", train[7].question, train[7].answer)
    run7 = _run(tmp_path / "run7", [_trace(own, [("0", "incorrect")])])
    settings = DataSettings(runs=[str(run7)], reference_dataset="gsm8k", data_dir=str(data_dir))
    (pair,) = records_from_settings("dpo", settings)
    assert pair["chosen"][0]["content"].endswith(f"\\boxed{{{train[7].answer}}}.")


# --- reasoner eval with an adapter --------------------------------------------------------------


def _eval(tmp_path: Path, data_dir: Path, adapter: Path) -> EvalConfig:
    return build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            "split=test",
            "limit=10",
            "model.name=smollm2-135m-instruct",
            "model.backend=transformers",
            f"model.adapter={adapter}",
            f"data_dir={data_dir}",
            f"out={tmp_path / 'run'}",
        ],
    )


def test_eval_warns_when_the_adapter_was_trained_on_the_benchmark(
    tmp_path: Path, data_dir: Path
) -> None:
    test = load_dataset(load_manifest("gsm8k"), "test", str(data_dir)).problems
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    write_question_hashes(adapter, [test[1].question, test[4].question, "Unrelated?"])
    with pytest.warns(HeldoutOverlapWarning, match=r"trained on 2 of the 10 questions of gsm8k"):
        plan = plan_eval(_eval(tmp_path, data_dir, adapter))
    assert plan.adapter_overlap == 2
    # disjoint, or nothing recorded: no warning
    write_question_hashes(adapter, ["Unrelated?"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeldoutOverlapWarning)
        assert plan_eval(_eval(tmp_path, data_dir, adapter)).adapter_overlap == 0
        assert plan_eval(_eval(tmp_path, data_dir, tmp_path / "bare")).adapter_overlap == 0
