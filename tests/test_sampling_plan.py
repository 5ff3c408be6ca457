"""DART-Math sampling in `reasoner iterate` (reasoner/loops/sampling_plan.py): Uniform samples
in batched rounds until each problem has k correct responses or its budget is spent; Prop2Diff's
targets grow with difficulty. Driven through the loop's own sampling step with a scripted
generator (no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _scripted_generator import ScriptedGenerator, request_text

from reasoner.config import build_config
from reasoner.errors import ConfigError
from reasoner.loops.config import IterateConfig
from reasoner.loops.iterate import _data_round, _sample_round
from reasoner.loops.report import correct_by_difficulty
from reasoner.loops.sampling_plan import (
    HISTOGRAM,
    PLAN_FILE,
    Tally,
    cap_per_problem,
    pending,
    targets,
)
from reasoner.types import GenerationRequest

QUESTIONS = {"easy": ("What is 2 + 3?", "5"), "half": ("What is 4 + 4?", "8"),
             "never": ("What is 9 + 9?", "18")}  # fmt: skip
# held out from training (a loop refuses held-out questions that it trains on)
HELDOUT = {"held": ("What is 6 + 7?", "13")}


def loop_config(tmp_path: Path, **sample: Any) -> IterateConfig:
    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": pid, "question": q, "answer": a}) + "\n"
            for pid, (q, a) in QUESTIONS.items()
        )
    )
    problems = {"benchmark": "gsm8k", "dataset": {"path": str(data), "id_field": "id"}}
    held = tmp_path / "heldout.jsonl"
    held.write_text(
        "".join(
            json.dumps({"id": pid, "question": q, "answer": a}) + "\n"
            for pid, (q, a) in HELDOUT.items()
        )
    )
    return build_config(
        IterateConfig,
        {
            # an OpenAI-served model: nothing to hash for the manifest, nothing contacted
            "model": {"name": "scripted", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"},
            "train_problems": problems,
            "heldout": {"benchmark": "gsm8k", "dataset": {"path": str(held), "id_field": "id"}},
            "sample": {"strategy": {"name": "self-consistency", "n": 2}, **sample},
            "max_per_problem": 1,
            "out": str(tmp_path / "loop"),
            "progress": False,
        },
    )


def scripted() -> ScriptedGenerator:
    """`easy` is always right, `never` always wrong, `half` right on its odd-numbered samples
    (1st, 3rd, ...), counted across the engine calls."""
    drawn = {"half": 0, "all": 0}

    def script(request: GenerationRequest, call: int) -> list[str]:
        text = request_text(request)
        known = {**QUESTIONS, **HELDOUT}
        pid = next(p for p, (q, _) in known.items() if q in text)
        replies = []
        for _ in range(request.sampling.n):
            answer = known[pid][1]
            if pid == "never":
                answer = "0"
            elif pid == "half":
                drawn["half"] += 1
                answer = answer if drawn["half"] % 2 == 1 else "1"
            drawn["all"] += 1  # distinct texts: identical solutions are one record
            replies.append(f"Attempt {drawn['all']}. The answer is \\boxed{{{answer}}}.")
        return replies

    return ScriptedGenerator(script)


def test_uniform_stops_at_k_correct_and_at_the_budget(tmp_path: Path) -> None:
    config = loop_config(tmp_path, method="uniform", k=3, max_samples=7, round_n=2)
    out = Path(str(config.out))
    generator = scripted()
    folders = _sample_round(config, out, 1, None, generator)

    plan = json.loads((out / "rounds" / "1" / PLAN_FILE).read_text())
    per = {p["id"]: p for p in plan["per_problem"]}
    # easy: 2 + 2 samples, all right -> stops once it has >= 3 correct
    assert (per["easy"]["samples"], per["easy"]["correct"]) == (4, 4)
    # half: right on samples 1, 3, 5 -> its 3rd correct comes with the 6th sample
    assert (per["half"]["samples"], per["half"]["correct"]) == (6, 3)
    # never: 2 + 2 + 2, then only 1 more: the budget of 7 is never exceeded
    assert (per["never"]["samples"], per["never"]["correct"]) == (7, 0)
    assert [per[p]["stopped"] for p in ("easy", "half", "never")] == ["target", "target", "budget"]
    assert {per[p]["target"] for p in per} == {3}
    assert per["half"]["difficulty"] == pytest.approx(0.5)
    # one engine call per batched round: all three, all three, the two short ones, `never`
    assert generator.calls == [3, 3, 2, 1]
    assert [f.name for f in folders] == [
        "samples", "samples-dart-1-n2", "samples-dart-2-n2", "samples-dart-3-n1",
    ]  # fmt: skip
    assert (plan["reached_target"], plan["stopped_at_budget"]) == (2, 1)
    png = out / "rounds" / "1" / HISTOGRAM
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resuming the round samples nothing new and ends with the same plan
    again = scripted()
    assert _sample_round(config, out, 1, None, again) == folders and again.calls == []
    assert json.loads((out / "rounds" / "1" / PLAN_FILE).read_text()) == plan

    # each problem's training records are capped at its target, not at max_per_problem (1)
    data = _data_round(config, out, 1, folders)
    ids = [json.loads(line)["id"] for line in data.read_text().splitlines()]
    assert ids.count("easy") == 3 and ids.count("half") == 3 and "never" not in ids


def test_prop2diff_targets_grow_with_difficulty(tmp_path: Path) -> None:
    assert targets("prop2diff", 4, {"a": 0.0, "b": 0.25, "c": 0.5}) == {"a": 1, "b": 2, "c": 4}
    assert targets("prop2diff", 4, {"a": 0.0, "b": 0.0}) == {"a": 1, "b": 1}
    assert targets("uniform", 4, {"a": 0.0, "b": 1.0}) == {"a": 4, "b": 4}

    config = loop_config(tmp_path, method="prop2diff", k=4, max_samples=8, round_n=2)
    out = Path(str(config.out))
    _sample_round(config, out, 1, None, scripted())
    per = {p["id"]: p for p in json.loads((out / "rounds" / "1" / PLAN_FILE).read_text())[
        "per_problem"]}  # fmt: skip
    # difficulty from the first 2 samples: easy 0, half 0.5, never 1 (the hardest gets k)
    assert [per[p]["target"] for p in ("easy", "half", "never")] == [1, 2, 4]
    assert per["easy"]["samples"] == 2  # its target was met by the first samples
    assert (per["half"]["samples"], per["half"]["correct"]) == (4, 2)
    assert (per["never"]["samples"], per["never"]["stopped"]) == (8, "budget")


def test_hard_n_stays_the_default_and_gets_a_plan_too(tmp_path: Path) -> None:
    config = loop_config(tmp_path, hard_n=3)
    assert config.sample.method == "hard_n"
    out = Path(str(config.out))
    generator = scripted()
    folders = _sample_round(config, out, 1, None, generator)
    assert [f.name for f in folders] == ["samples", "samples-hard"]
    assert generator.calls == [3, 1]  # only `never` is at or below the 0.0 threshold
    plan = json.loads((out / "rounds" / "1" / PLAN_FILE).read_text())
    per = {p["id"]: p for p in plan["per_problem"]}
    assert per["never"]["samples"] == 5 and per["never"]["target"] is None
    rows = correct_by_difficulty(plan)
    assert [(start, count) for start, count, _, _ in rows] == [(0.0, 1), (0.5, 1), (0.9, 1)]


def test_pending_groups_by_what_is_left_of_the_budget() -> None:
    counts = {"a": Tally(6, 0), "b": Tally(2, 0), "c": Tally(2, 5), "d": Tally(8, 0)}
    wanted = dict.fromkeys(counts, 3)
    assert pending(counts, wanted, 8, 4) == {4: ["b"], 2: ["a"]}
    records = [{"id": "a"}, {"id": "a"}, {"id": "b"}, {"id": "a"}]
    assert cap_per_problem(records, {"a": 2}) == records[:3]


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        ({"method": "uniform", "hard_n": 4}, "hard_n"),
        ({"method": "uniform", "max_samples": 1}, "max_samples"),
    ],
)
def test_contradictory_sampling_settings_name_the_field(sample: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"sample.*{field}"):
        build_config(IterateConfig, {"sample": {"strategy": {"n": 2}, **sample}})


def test_a_uniform_loop_round_trains_in_a_child_and_reports_memory_and_sampling(
    tmp_path: Path, test_model_path: Path
) -> None:
    """The whole loop without an engine: scripted samples, DART Uniform, SFT of a tiny model
    in the training child, round.json with the sampling and memory reports; a re-run resumes
    without sampling or training again."""
    from _tiny_model import make_tiny_model

    from reasoner.loops.iterate import run_iterate

    model = make_tiny_model(tmp_path / "tiny", test_model_path)
    settings = loop_config(tmp_path, method="uniform", k=2, max_samples=4).model_dump(mode="json")
    settings.update(
        rounds=1,
        model={"name": model, "enable_lora": True},
        train={"train": {"max_steps": 1, "batch_size": 2, "save_steps": 1}},
    )
    config = build_config(IterateConfig, settings)
    generator = scripted()
    summaries = run_iterate(config, generator=generator)
    first = summaries[1]
    assert first["sampling"]["method"] == "uniform"
    assert (first["sampling"]["reached_target"], first["sampling"]["stopped_at_budget"]) == (2, 1)
    assert Path(first["sampling"]["histogram"]).is_file()
    assert first["memory"]["train_child_peak_rss_mib"] > 50
    assert first["memory"]["loop_peak_rss_mib"] > 50
    assert (Path(first["adapter"]) / "adapter_model.safetensors").is_file()
    assert first["dataset_records"] == 4  # easy and half: 2 each, never: none

    again = scripted()
    assert run_iterate(config, generator=again) == summaries and again.calls == []


def test_a_batch_that_adds_no_samples_cannot_loop_forever(tmp_path: Path) -> None:
    """An engine that returns nothing for a pending problem: the sampling ends at the bound
    the budget sets (ceil(max_samples / round_n) batches) instead of creating folders forever."""
    from reasoner.loops.sampling_plan import sample_to_quota

    first = tmp_path / "first"
    first.mkdir()
    row = {"problem": {"id": "p", "question": "q", "answer": "1"},
           "steps": [{"verdicts": [{"status": "incorrect", "score": 0.0}]}]}  # fmt: skip
    (first / "results.jsonl").write_text(json.dumps(row) + "\n")
    made: list[Path] = []

    def run_batch(name: str, ids: list[str], n: int, batch: int) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        made.append(folder)
        return folder

    folders, plan = sample_to_quota("uniform", first, 2, 5, 2, run_batch)
    assert len(folders) == len(made) == 3
    assert [(p.id, p.samples, p.correct) for p in plan] == [("p", 1, 0)]
