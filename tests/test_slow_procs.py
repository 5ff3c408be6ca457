"""Processes around the real vLLM engine (issue 16, items 2 and 11): the README's Python example
runs as a plain script, and a `reasoner eval` or `compare` killed alone (not its process group)
takes its EngineCore, worker and verifier processes with it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.processes import descendants, kill_all, name, survivors

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
ENGINE = f'name="{MODEL}", dtype="float32", kv_cache_gb=1, max_model_len=2048'
MARKER = "readme-example-ran"


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "REASONER_DATA_DIR": str(data_dir)}


def _readme_example() -> str:
    """The README's Python example (the one that loads a generator), on the test model."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "load_generator(" in b)
    example, swapped = re.subn(r'ModelConfig\(name="[^"]+"\)', f"ModelConfig({ENGINE})", example)
    assert swapped == 1, "the README example no longer builds its ModelConfig as expected"
    example = re.sub(r"\bn=\d+", "n=2", example)  # fewer samples, same code path
    return f"print({MARKER!r}, flush=True)\n{example}"


def test_readme_python_example_runs_as_a_plain_script(tmp_path: Path, data_dir: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_readme_example())
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=_env(data_dir),
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert lines.count(MARKER) == 1, done.stdout  # no engine or verifier process re-ran it
    # `prediction status usage`, among vLLM's log lines (they go to stdout too): a verdict came
    # back from the verifier's worker
    verdicts = [line for line in lines if re.search(r" (correct|incorrect) Usage\(", line)]
    assert len(verdicts) == 1, done.stdout[-4000:]


# --- signals ---------------------------------------------------------------------------------


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


ENGINE_FLAGS = (
    *("--set", "model.kv_cache_gb=1", "--set", "model.max_model_len=2048"),
    *("--set", "model.dtype=float32"),
)


def _eval(out: Path) -> tuple[list[str], Path]:
    command = [
        # 40 problems: enough that the signal lands while later problems are still generating
        *("eval", "gsm8k", "--model", MODEL, "--limit", "40", "--max-tokens", "256"),
        *("--no-progress", "--out", str(out), *ENGINE_FLAGS),
    ]
    return command, out / "results.jsonl"


def _compare(out: Path) -> tuple[list[str], Path]:
    """Two shipped configs through `reasoner compare` (the engine is the command's, not a
    run's); the signal lands during the first or the second, never after both."""
    command = [
        *("compare", "gsm8k-greedy", "gsm8k-sc8", "--model", MODEL, "--limit", "12"),
        *("--out", str(out)),
        *("--set", "sampling.max_tokens=256", *ENGINE_FLAGS),
    ]
    return command, out / "gsm8k-greedy" / "results.jsonl"


# Each signal once per command would be 12 engine starts; the handling is shared (SIGTERM and
# SIGINT: `cli.main`'s handler closes the generator; SIGKILL: every engine child's parent
# watcher), so eval gets SIGTERM here and SIGKILL in test_slow_eval's kill-and-resume test,
# compare SIGINT, `reasoner serve` SIGTERM (test_slow_serving) and `reasoner iterate` SIGKILL
# mid-training (test_slow_iterate).
@pytest.mark.parametrize(
    ("command", "signum", "returncode"),
    [
        (_eval, signal.SIGTERM, 143),
        (_compare, signal.SIGINT, 130),
    ],
    ids=["eval-SIGTERM", "compare-SIGINT"],
)
def test_a_command_killed_alone_leaves_no_process(
    tmp_path: Path,
    data_dir: Path,
    command: Callable[[Path], tuple[list[str], Path]],
    signum: int,
    returncode: int,
) -> None:
    arguments, results = command(tmp_path / "run")
    log = (tmp_path / "log").open("w")
    # its own session, so that only what this test sends reaches it
    cli = subprocess.Popen(
        [sys.executable, "-m", "reasoner.cli", *arguments],
        env=_env(data_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 600
        while _rows(results) < 1:  # generating: the engine is up and a problem is done
            assert cli.poll() is None, (tmp_path / "log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no result within 10 minutes"
            time.sleep(0.2)
        family = descendants(cli.pid)
        assert any("EngineCore" in name(pid) for pid in family), [name(p) for p in family]
        finished = _rows(results)
        os.kill(cli.pid, signum)  # the main process only, not its group
        assert cli.wait(timeout=180) == returncode, (tmp_path / "log").read_text()[-3000:]
        assert survivors(family) == []
        assert _rows(results) >= finished  # nothing finished was lost
    finally:
        if cli.poll() is None:
            family |= descendants(cli.pid)
            cli.kill()
            cli.wait()
        kill_all(family)
        log.close()
