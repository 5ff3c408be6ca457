"""The math verifier works from every kind of caller (issue 15, item 3): its worker processes
never re-run the caller's script, whether that is a script without a main guard, `python -`,
`python -c` (what a notebook cell amounts to), a thread, or a Ray task."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reasoner.verifiers.isolation import IsolatedWorker

ROOT = Path(__file__).resolve().parents[1]
MARKER = "caller-script-ran"
# Both cases need the worker (sympy), not the plain-string fast path.
CASES = [("0.5", r"so it is \boxed{\frac{1}{2}}"), ("0.5", r"so it is \boxed{\frac{1}{3}}")]
EXPECTED = "correct incorrect"

# No `if __name__ == "__main__":` guard, on purpose: that is how the README's examples read.
SCRIPT = f"""
import threading
from reasoner.types import Completion, Problem
from reasoner.verifiers import load

print({MARKER!r}, flush=True)
CASES = {CASES!r}


def statuses(verifier):
    return " ".join(
        verifier.verify(
            Problem(id="p", question="q", answer=gold),
            Completion(text, "stop", prompt_tokens=0, completion_tokens=0),
        ).status
        for gold, text in CASES
    )


with load("math") as verifier:
    print("main", statuses(verifier), flush=True)
    # a fresh verifier whose workers a thread starts
with load("math") as verifier:
    found = []
    thread = threading.Thread(target=lambda: found.append(statuses(verifier)))
    thread.start()
    thread.join()
    print("thread", found[0], flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _check(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # a worker that re-ran the script would have printed the marker again
    assert lines.count(MARKER) == 1, result.stdout
    assert f"main {EXPECTED}" in lines, result.stdout + result.stderr[-3000:]
    assert f"thread {EXPECTED}" in lines, result.stdout + result.stderr[-3000:]


def test_plain_script_without_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script)]
    _check(subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300))


def test_script_on_stdin(tmp_path: Path) -> None:
    command = [sys.executable, "-"]
    result = subprocess.run(
        command,
        input=SCRIPT,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        cwd=tmp_path,
    )
    _check(result)


def test_python_c_like_a_notebook_cell(tmp_path: Path) -> None:
    command = [sys.executable, "-c", SCRIPT]
    _check(
        subprocess.run(
            command, capture_output=True, text=True, env=_env(), timeout=300, cwd=tmp_path
        )
    )


def test_worker_started_by_a_thread_outlives_that_thread() -> None:
    """Workers watch their parent *process*: a worker started from a thread that then ends (a
    thread pool shutting down) must keep serving. PR_SET_PDEATHSIG would have killed it."""
    worker = IsolatedWorker()
    try:
        pids: list[int] = []
        thread = threading.Thread(target=lambda: pids.append(worker.call(os.getpid, timeout=60)))
        thread.start()
        thread.join()
        time.sleep(0.5)  # a death signal tied to the thread would have landed by now
        assert worker.call(os.getpid, timeout=60) == pids[0]
    finally:
        worker.close()


@pytest.mark.slow  # a local Ray instance takes ~20 s to start on 2 cores
def test_ray_task(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    code = f"""
import ray
ray.init(num_cpus=1, include_dashboard=False)

@ray.remote
def check():
    from reasoner.types import Completion, Problem
    from reasoner.verifiers import load
    with load("math") as verifier:
        return " ".join(
            verifier.verify(
                Problem(id="p", question="q", answer=gold),
                Completion(text, "stop", prompt_tokens=0, completion_tokens=0),
            ).status
            for gold, text in {CASES!r}
        )

print("ray", ray.get(check.remote()), flush=True)
ray.shutdown()
"""
    env = {**_env(), "RAY_AUTH_MODE": "disabled"}
    # Files, not pipes: Ray's daemons inherit the driver's stdout and can hold a pipe open.
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        command = [sys.executable, "-c", code]
        returncode = subprocess.run(command, stdout=stdout, stderr=stderr, env=env, timeout=600)
    assert returncode.returncode == 0, err.read_text()[-3000:]
    assert f"ray {EXPECTED}" in out.read_text().splitlines(), out.read_text()
