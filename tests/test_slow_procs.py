"""Processes around the real vLLM engine (issue 16, items 2 and 11): the README's Python example
runs as a plain script, and a `reasoner eval` killed alone (not its process group) takes its
EngineCore, worker and verifier processes with it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def _parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie runs nothing; reaping it is its new parent's job


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.parametrize(
    ("signum", "returncode"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["SIGTERM", "SIGINT", "SIGKILL"],
)
def test_eval_killed_alone_leaves_no_process(
    tmp_path: Path, data_dir: Path, signum: int, returncode: int
) -> None:
    out = tmp_path / "run"
    results = out / "results.jsonl"
    command = [
        *(sys.executable, "-m", "reasoner.cli", "eval", "gsm8k", "--model", MODEL),
        *("--limit", "12", "--max-tokens", "256", "--no-progress", "--out", str(out)),
        *("--set", "model.kv_cache_gb=1", "--set", "model.max_model_len=2048"),
        *("--set", "model.dtype=float32"),
    ]
    log = (tmp_path / "log").open("w")
    # its own session, so that only what this test sends reaches it
    cli = subprocess.Popen(
        command, env=_env(data_dir), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 600
        while _rows(results) < 1:  # generating: the engine is up and a problem is done
            assert cli.poll() is None, (tmp_path / "log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no result within 10 minutes"
            time.sleep(0.2)
        family = _descendants(cli.pid)
        assert any("EngineCore" in _name(pid) for pid in family), [_name(p) for p in family]
        finished = _rows(results)
        os.kill(cli.pid, signum)  # the main process only, not its group
        assert cli.wait(timeout=180) == returncode, (tmp_path / "log").read_text()[-3000:]
        deadline = time.monotonic() + 30  # "a few seconds", with room for a loaded machine
        while any(map(_running, family)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [f"{pid} {_name(pid)}" for pid in family if _running(pid)]
        assert left == []
        assert _rows(results) >= finished  # nothing finished was lost
    finally:
        if cli.poll() is None:
            family |= _descendants(cli.pid)
            cli.kill()
            cli.wait()
        for pid in filter(_running, family):  # whatever a failed test left behind
            os.kill(pid, signal.SIGKILL)
        log.close()
