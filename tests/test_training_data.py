"""Training records from run folders, data manifests and HF-datasets files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoner.errors import ConfigError, DatasetError
from reasoner.training.config import DataSettings
from reasoner.training.data import (
    build_records,
    check_records,
    dpo_pairs_from_runs,
    gsm8k_completion,
    load_records,
    records_from_settings,
    sft_records_from_dataset,
    sft_records_from_runs,
)
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

CHAT = (ChatMessage("system", "Solve it."), ChatMessage("user", "What is 2 + 3?"))


def _trace(
    problem_id: str, samples: list[tuple[str, str, str]], messages: tuple[ChatMessage, ...] = CHAT
) -> Trace:
    """samples: (text, verdict status, finish reason)."""
    request = GenerationRequest(messages=messages, sampling=SamplingParams(n=len(samples)))
    completions = [Completion(text, finish, 10, 5) for text, _, finish in samples]  # type: ignore[arg-type]
    verdicts = [
        Verdict(status, 1.0 if status == "correct" else 0.0)  # type: ignore[arg-type]
        for _, status, _ in samples
    ]
    return Trace(
        problem=Problem(problem_id, "What is 2 + 3?", "5"),
        steps=[Step(request, completions, verdicts)],
        prediction="5",
        verdict=verdicts[0],
        usage=Usage(),
    )


def _run(folder: Path, traces: list[Trace]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.jsonl", "w") as f:
        for trace in traces:
            f.write(json.dumps(trace.to_dict()) + "\n")
    return folder


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    return _run(
        tmp_path / "run",
        [
            _trace(
                "a",
                [
                    ("2 + 3 = 5. The answer is 5.", "correct", "stop"),
                    ("  2 + 3 = 5. The answer is 5.\n", "correct", "stop"),  # same, once
                    ("Adding gives 5.", "correct", "stop"),
                    ("2 + 3 = 6.", "incorrect", "stop"),
                    ("The checker crashed on this one.", "error", "stop"),
                    ("2 + 3 = 5 and then I kept", "correct", "length"),
                ],
            ),
            _trace("b", [("It is 7.", "incorrect", "stop"), ("It is 8.", "incorrect", "stop")]),
        ],
    )


def test_sft_records_keep_distinct_correct_finished_completions(run_folder: Path) -> None:
    records = sft_records_from_runs([run_folder])
    texts = [r["completion"][0]["content"] for r in records]
    assert texts == ["2 + 3 = 5. The answer is 5.", "Adding gives 5."]
    assert all(r["id"] == "a" and r["answer"] == "5" for r in records)
    assert records[0]["prompt"] == [
        {"role": "system", "content": "Solve it."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    assert records[0]["completion"][0]["role"] == "assistant"
    with_cut = sft_records_from_runs([run_folder], require_stop=False)
    assert len(with_cut) == 3
    assert len(sft_records_from_runs([run_folder], max_per_problem=1)) == 1


def test_dpo_pairs_never_use_verifier_errors(run_folder: Path) -> None:
    pairs = dpo_pairs_from_runs([run_folder])
    assert {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs} == {
        ("2 + 3 = 5. The answer is 5.", "2 + 3 = 6."),
        ("Adding gives 5.", "2 + 3 = 6."),
    }
    assert all(p["prompt"][-1]["content"] == "What is 2 + 3?" for p in pairs)


def test_dpo_pairs_draw_is_seeded_and_capped(tmp_path: Path) -> None:
    samples = [(f"right {i}", "correct", "stop") for i in range(4)]
    samples += [(f"wrong {i}", "incorrect", "stop") for i in range(4)]
    folder = _run(tmp_path / "many", [_trace("p", samples)])
    first = dpo_pairs_from_runs([folder], max_per_problem=3, seed=1)
    assert len(first) == 3 and len({json.dumps(p) for p in first}) == 3
    assert first == dpo_pairs_from_runs([folder], max_per_problem=3, seed=1)
    assert len(dpo_pairs_from_runs([folder])) == 16


def test_reference_solution_stands_in_for_a_missing_correct_sample(run_folder: Path) -> None:
    # matched on the question text (normalised), not the problem id
    pairs = dpo_pairs_from_runs([run_folder], references={"what is 2+3": "3 + 4 = 7... no: 5."})
    from_b = [p for p in pairs if p["id"] == "b"]
    assert {p["rejected"][0]["content"] for p in from_b} == {"It is 7.", "It is 8."}
    assert {p["chosen"][0]["content"] for p in from_b} == {"3 + 4 = 7... no: 5."}
    # a problem that has a correct sample keeps its own
    assert all(p["chosen"][0]["content"] != "3 + 4 = 7... no: 5." for p in pairs if p["id"] == "a")


def test_a_verifier_rechecks_completions_against_the_gold_answer(tmp_path: Path) -> None:
    from reasoner.verifiers import load

    # the recorded verdicts are wrong on purpose: the verifier's word replaces them
    folder = _run(
        tmp_path / "r",
        [
            _trace(
                "a",
                [
                    ("So the answer is \\boxed{5}.", "incorrect", "stop"),
                    ("So the answer is \\boxed{6}.", "correct", "stop"),
                ],
            )
        ],
    )
    with load("math") as verifier:
        records = sft_records_from_runs([folder], verifier=verifier)
    assert [r["completion"][0]["content"] for r in records] == ["So the answer is \\boxed{5}."]
    assert sft_records_from_runs([folder])[0]["completion"][0]["content"].endswith("{6}.")


def test_runs_that_mix_chats_and_raw_prompts_are_refused(tmp_path: Path) -> None:
    raw = _trace("x", [("5", "correct", "stop")])
    raw.steps[0].request = GenerationRequest(prompt="2 + 3 =", sampling=SamplingParams())
    folder = _run(tmp_path / "mixed", [_trace("a", [("5", "correct", "stop")]), raw])
    with pytest.raises(DatasetError, match="mix chat requests and raw-text prompts"):
        sft_records_from_runs([folder])
    only_raw = _run(tmp_path / "raw", [raw])
    assert sft_records_from_runs([only_raw]) == [
        {
            "id": "x",
            "question": "What is 2 + 3?",
            "prompt": "2 + 3 =",
            "completion": "5",
            "answer": "5",
        }
    ]


def test_a_proof_search_gives_the_tactics_on_its_accepted_proof(tmp_path: Path) -> None:
    def state(goal: str) -> GenerationRequest:
        return GenerationRequest(messages=(ChatMessage("user", f"goal: {goal}"),))

    steps = [
        Step(state(g), [Completion(t, "stop", 5, 2) for t in ts], [])
        for g, ts in [("a = c", ["subst h", "simp"]), ("b = c", ["rfl"])]
    ]
    tree = [
        {"id": 0, "parent": None, "status": "open"},
        {"id": 1, "parent": 0, "step": 0, "tactic": "subst h", "status": "open"},
        {"id": 2, "parent": 0, "step": 0, "tactic": "simp", "status": "failed"},
        {"id": 3, "parent": 1, "step": 1, "tactic": "rfl", "status": "proved"},
    ]
    proved = Verdict("correct", 1.0)
    problem = Problem("t", "theorem t", None)
    trace = Trace(problem, steps, "rfl", proved, Usage(), tree=tree)
    unproved = Trace(problem, steps, None, Verdict("incorrect", 0.0), Usage(), tree=tree)
    records = sft_records_from_runs([_run(tmp_path / "run", [trace, unproved])])
    assert [(r["prompt"][0]["content"], r["completion"][0]["content"]) for r in records] == [
        ("goal: a = c", "subst h"),
        ("goal: b = c", "rfl"),
    ]


def test_a_torn_last_line_is_skipped_and_left_alone(run_folder: Path) -> None:
    results = run_folder / "results.jsonl"
    with open(results, "a") as f:
        f.write('{"problem": {"id": "c"')
    size = results.stat().st_size
    assert len(sft_records_from_runs([run_folder])) == 2
    assert results.stat().st_size == size


def test_build_records_picks_pairs_for_dpo(run_folder: Path) -> None:
    assert all("chosen" in r for r in build_records("dpo", [run_folder]))
    assert all("completion" in r for r in build_records("sft", [run_folder]))


def test_gsm8k_solution_becomes_a_boxed_answer() -> None:
    solution = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nSo 48+24 = <<48+24=72>>72.\n#### 1,072"
    )
    assert gsm8k_completion(solution) == (
        "Natalia sold 48/2 = 24 clips in May.\nSo 48+24 = 72.\nThe answer is \\boxed{1072}."
    )
    with pytest.raises(ValueError, match="####"):
        gsm8k_completion("no final line")


def test_dataset_solutions_are_rendered_with_the_eval_prompt(data_dir: Path) -> None:
    from reasoner.prompts import load_prompt
    from reasoner.runner.datasets import load_dataset, load_manifest

    records = sft_records_from_dataset("gsm8k", "train", limit=3)
    problems = load_dataset(load_manifest("gsm8k"), "train").problems[:3]
    assert [r["id"] for r in records] == [p.id for p in problems]
    assert [r["answer"] for r in records] == [p.answer for p in problems]
    rendered = load_prompt("math_cot").render(problems[0])
    assert records[0]["prompt"] == [{"role": m.role, "content": m.content} for m in rendered]
    text = records[0]["completion"][0]["content"]
    assert text.endswith(f"The answer is \\boxed{{{problems[0].answer}}}.") and "<<" not in text


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_load_records_reads_hf_datasets_files(tmp_path: Path, suffix: str) -> None:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "completion": [{"role": "assistant", "content": f"a{i}"}],
            "answer": str(i),
        }
        for i in range(3)
    ]
    path = tmp_path / f"records{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))
    assert load_records(path) == rows
    check_records(load_records(path), "sft", str(path))


def test_bad_records_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="record 1 has columns"):
        check_records(
            [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}],
            "dpo",
            "pairs.jsonl",
        )
    with pytest.raises(DatasetError, match=r"\.csv"):
        (tmp_path / "x.csv").write_text("a,b\n")
        load_records(tmp_path / "x.csv")
    with pytest.raises(DatasetError, match="no training records"):
        check_records([], "sft", "empty")


def test_dpo_from_a_dataset_is_refused() -> None:
    with pytest.raises(ConfigError, match="preference pairs"):
        records_from_settings("dpo", DataSettings(dataset="gsm8k"))


def test_records_from_settings_applies_the_limit(run_folder: Path) -> None:
    settings = DataSettings(runs=[str(run_folder)], limit=1)
    # the limit counts problems: both correct solutions of the one problem
    assert len(records_from_settings("sft", settings)) == 2
    with pytest.raises(DatasetError, match="no training records"):
        records_from_settings("sft", DataSettings(runs=[str(run_folder)], skip=1))
