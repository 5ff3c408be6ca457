"""A first `reasoner eval` says what it runs and why in a handful of lines; the engine's own
logs (vLLM, torch, oneDNN, its child processes) land in RUN/engine.log; `--verbose` streams
them as before (checked by test_slow_eval's kill-and-resume test, which resumes with
`--verbose`, so that it costs no engine start of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
BAR = "gsm8k/greedy"  # the progress bar's description
MAX_LINES_BEFORE_BAR = 8


def _eval(out: Path, data_dir: Path, *extra: str) -> str:
    args = [
        "eval",
        "gsm8k",
        "--model",
        MODEL,
        "--limit",
        "1",
        "--max-tokens",
        "16",
        "--set",
        "model.kv_cache_gb=1",
        "--set",
        "model.max_model_len=2048",
        "--out",
        str(out),
        *extra,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "reasoner.cli", *args],
        env={**os.environ, "REASONER_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def _before_bar(terminal: str) -> list[str]:
    head = terminal.split(BAR, 1)[0]
    return [line for line in head.splitlines() if line.strip()]


def test_terminal_is_quiet_and_engine_log_has_the_vllm_lines(
    tmp_path: Path, data_dir: Path
) -> None:
    out = tmp_path / "run"
    terminal = _eval(out, data_dir)
    assert BAR in terminal
    head = _before_bar(terminal)
    assert len(head) <= MAX_LINES_BEFORE_BAR, "\n".join(head)
    assert any(line.startswith(f"model: {MODEL}") for line in head)
    assert any(line.startswith("dtype: ") and "(" in line for line in head)
    assert any(line.startswith("engine ready in ") for line in head)
    assert "EngineCore" not in terminal and "WARNING" not in terminal
    log = (out / "engine.log").read_text()
    assert "EngineCore" in log  # the child process's lines
    assert "vllm" in log.lower()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"]["requested"] == "auto"
    assert manifest["dtype"]["dtype"] in ("float32", "bfloat16")
    assert isinstance(manifest["dtype"]["cpu_flags"], list)
