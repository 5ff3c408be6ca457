"""`reasoner eval` with the real vLLM engine: end to end, killed with SIGKILL and resumed,
and through a real `vllm serve` over HTTP.

The kill-and-resume test also stands for two checks that would each cost an engine start of
their own: SIGKILL of the CLI's process alone leaves no engine process behind (issue 16 item
2; the other signals are in test_slow_procs), and `--verbose` streams the engine's logs to
the terminal instead of RUN/engine.log (item 4; the quiet default is in
test_slow_quiet_terminal)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reasoner.config import EvalConfig, build_config
from reasoner.models.config import ModelConfig
from reasoner.models.openai_server import OpenAIServerGenerator
from reasoner.runner.evaluate import run_eval
from reasoner.runner.run_folder import RunFolder
from reasoner.types import ChatMessage, GenerationRequest, SamplingParams
from tests.processes import descendants, kill_all, name, survivors

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
LIMIT = 10
MAX_TOKENS = 200
METRIC_KEYS = (
    "problems",
    "scored",
    "correct",
    "accuracy",
    "accuracy_ci95",
    "verifier_errors",
    "no_answer",
    "complete",
)
CLI_ARGS = [
    "gsm8k",
    "--model",
    MODEL,
    "--limit",
    str(LIMIT),
    "--max-tokens",
    str(MAX_TOKENS),
    "--no-progress",
    "--set",
    "model.kv_cache_gb=1",
    "--set",
    "model.max_model_len=2048",
    "--set",
    "model.dtype=float32",
]


def _metrics(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in METRIC_KEYS}


@pytest.fixture(scope="module")
def uninterrupted(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, vllm_generator: Any
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval") / "run"
    config = build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            f"model.name={MODEL}",
            f"limit={LIMIT}",
            f"sampling.max_tokens={MAX_TOKENS}",
            f"out={out}",
            f"data_dir={data_dir}",
            "progress=false",
            "model.kv_cache_gb=1",
            "model.max_model_len=2048",
            "model.dtype=float32",
        ],
    )
    summary = run_eval(config, generator=vllm_generator)
    return {"summary": summary, "rows": RunFolder(out).load_results(), "out": out}


def test_eval_of_ten_gsm8k_problems(uninterrupted: dict[str, Any]) -> None:
    summary, rows = uninterrupted["summary"], uninterrupted["rows"]
    assert summary["complete"] and summary["problems"] == LIMIT
    assert sorted(int(r["problem"]["id"]) for r in rows) == list(range(LIMIT))
    assert summary["tokens"]["completion"] > LIMIT * 10
    assert 0.0 <= summary["accuracy"] <= 1.0
    low, high = summary["accuracy_ci95"]
    assert low <= summary["accuracy"] <= high
    assert summary["timing"]["completion_tokens_per_s"] > 0
    manifest = json.loads((uninterrupted["out"] / "manifest.json").read_text())
    assert manifest["model"]["weights_sha256"].startswith("b179c952")
    assert manifest["model"]["generator"].startswith("vllm:")


def _cli(out: Path, data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REASONER_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "reasoner.cli", "eval", *CLI_ARGS, "--out", str(out), *extra],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _rows_written(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def test_sigkill_and_resume_loses_nothing(
    tmp_path: Path, data_dir: Path, uninterrupted: dict[str, Any]
) -> None:
    out = tmp_path / "killed"
    results = out / "results.jsonl"
    process = _cli(out, data_dir)
    deadline = time.monotonic() + 600
    while _rows_written(results) < 3:
        assert process.poll() is None, process.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no results within 10 minutes"
        time.sleep(0.2)
    family = descendants(process.pid)  # vLLM's EngineCore, its worker, the verifier's pool
    assert any("EngineCore" in name(pid) for pid in family), [name(p) for p in family]
    os.kill(process.pid, signal.SIGKILL)  # the CLI's own process alone, mid-batch
    process.wait()
    try:
        assert survivors(family) == []  # each died with its parent
    finally:
        kill_all(family)
    before = results.read_bytes()
    finished = before.count(b"\n")
    assert 3 <= finished < LIMIT, "the kill should land mid-run"
    engine_log = (out / "engine.log").read_text()
    assert "EngineCore" in engine_log

    resumed = _cli(out, data_dir, "--verbose")
    output = resumed.communicate(timeout=900)[0].decode()
    assert resumed.returncode == 0, output[-3000:]
    # --verbose: the engine's lines on the terminal, none added to engine.log
    assert "EngineCore" in output
    assert "dtype: float32 (set in the config)" in output
    assert (out / "engine.log").read_text() == engine_log
    after = results.read_bytes()
    assert after.startswith(before[: before.rfind(b"\n") + 1]), "finished rows were rewritten"
    rows = RunFolder(out).load_results()
    assert sorted(int(r["problem"]["id"]) for r in rows) == list(range(LIMIT))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"]["sessions"] == 2
    assert summary["timing"]["interrupted_sessions"] == 1
    assert _metrics(summary) == _metrics(uninterrupted["summary"])
    # Texts are not compared: the resumed problems run in a smaller batch, and vLLM's CPU
    # kernels are not batch-invariant, so a near-tie may decode differently.
    assert "accuracy" in output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(test_model_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{len(os.sched_getaffinity(0)) - 1}",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(test_model_path),
            "--served-model-name",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "2048",
            "--enforce-eager",
            "--enable-prefix-caching",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None:
                pytest.fail("vllm serve exited: " + server.stderr.read().decode()[-3000:])  # type: ignore[union-attr]
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "vllm serve did not become healthy"
            time.sleep(1)
        yield base + "/v1"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_openai_backend_against_vllm_serve(vllm_server: str) -> None:
    generator = OpenAIServerGenerator(
        ModelConfig(name=MODEL, backend="openai", base_url=vllm_server, max_concurrency=3)
    )
    chat = (ChatMessage("user", "Name three colours."),)
    requests = [
        GenerationRequest(
            messages=chat, sampling=SamplingParams(n=2, temperature=0.9, max_tokens=16, seed=3)
        ),
        GenerationRequest(
            prompt="The capital of France is",
            sampling=SamplingParams(max_tokens=6, stop=(".",), logprobs=1),
        ),
        *[
            GenerationRequest(prompt=f"{i} + {i} =", sampling=SamplingParams(max_tokens=3))
            for i in range(6)
        ],
    ]
    results = generator.generate(requests)
    assert len(results) == len(requests)
    assert len(results[0]) == 2 and results[0][0].prompt_tokens > 5
    assert all(c.completion_tokens > 0 for c in results[0])
    again = generator.generate(requests[:1])[0]
    assert [c.text for c in again] == [c.text for c in results[0]], "seeded requests repeat"
    capital = results[1][0]
    assert "Paris" in capital.text and "." not in capital.text
    assert capital.logprobs is not None and len(capital.logprobs) == capital.completion_tokens
    assert all(r[0].finish_reason == "length" for r in results[2:])


def test_eval_through_the_server(vllm_server: str, tmp_path: Path, data_dir: Path) -> None:
    config = build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            f"model.name={MODEL}",
            f"model.base_url={vllm_server}",
            "limit=3",
            "sampling.max_tokens=64",
            "strategy.name=self-consistency",
            "strategy.n=2",
            f"out={tmp_path / 'served'}",
            f"data_dir={data_dir}",
            "progress=false",
        ],
    )
    summary = run_eval(config)
    assert summary["complete"] and summary["problems"] == 3 and summary["samples_per_problem"] == 2
    manifest = json.loads((tmp_path / "served" / "manifest.json").read_text())
    assert manifest["model"]["generator"].startswith("openai:")
