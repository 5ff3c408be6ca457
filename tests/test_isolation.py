from __future__ import annotations

import operator
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _isolation_helpers import sleep_then_pid

from reasoner.verifiers.isolation import (
    IsolatedWorker,
    VerifierCrashed,
    VerifierFailed,
    VerifierTimeout,
    WorkerPool,
)


@pytest.fixture
def worker() -> Iterator[IsolatedWorker]:
    w = IsolatedWorker()
    yield w
    w.close()


def _is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie no longer runs; reaping it is its new parent's job


def _wait_gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if _is_gone(pid):
            return True
        time.sleep(0.05)
    return _is_gone(pid)


def test_call_returns_result(worker: IsolatedWorker) -> None:
    assert worker.call(operator.add, 2, 3, timeout=30) == 5
    assert worker.pid != os.getpid()


def test_timeout_kills_and_replaces_worker(worker: IsolatedWorker) -> None:
    first = worker.call(os.getpid, timeout=30)
    start = time.monotonic()
    with pytest.raises(VerifierTimeout):
        worker.call(time.sleep, 30, timeout=0.3)
    assert time.monotonic() - start < 3
    assert _wait_gone(first, within_s=5)
    second = worker.call(os.getpid, timeout=30)
    assert second != first


def test_remote_exception_is_failed_and_worker_survives(worker: IsolatedWorker) -> None:
    pid = worker.call(os.getpid, timeout=30)
    with pytest.raises(VerifierFailed) as info:
        worker.call(operator.truediv, 1, 0, timeout=30)
    assert info.value.remote_type == "ZeroDivisionError"
    assert "division by zero" in info.value.remote_message
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)
    assert worker.call(os.getpid, timeout=30) == pid


def test_worker_exit_is_crash_and_worker_is_replaced(worker: IsolatedWorker) -> None:
    with pytest.raises(VerifierCrashed, match="exit code 3"):
        worker.call(os._exit, 3, timeout=30)
    assert worker.call(operator.mul, 6, 7, timeout=30) == 42


def test_sys_exit_in_job_does_not_kill_worker(worker: IsolatedWorker) -> None:
    pid = worker.call(os.getpid, timeout=30)
    with pytest.raises(VerifierFailed, match="SystemExit"):
        worker.call(sys.exit, 1, timeout=30)
    assert worker.call(os.getpid, timeout=30) == pid


def test_closed_worker_restarts_on_next_call(worker: IsolatedWorker) -> None:
    first = worker.call(os.getpid, timeout=30)
    worker.close()
    assert worker.pid is None
    assert worker.call(os.getpid, timeout=30) != first


def test_pool_runs_calls_from_threads_in_parallel() -> None:
    pool = WorkerPool(2)
    try:
        pids: list[int] = []

        def run(seconds: float) -> None:
            pids.append(pool.call(sleep_then_pid, seconds, timeout=30))

        def run_batch(n: int, seconds: float) -> float:
            threads = [threading.Thread(target=run, args=(seconds,)) for _ in range(n)]
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.monotonic() - start

        run_batch(2, 0.0)  # start both workers outside the timed part
        assert run_batch(2, 0.5) < 0.9  # two half-second sleeps overlapped
        pids.clear()
        run_batch(5, 0.05)  # more callers than workers wait for an idle one
        assert len(pids) == 5 and len(set(pids)) <= 2
    finally:
        pool.close()


def test_pool_rejects_empty_size() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerPool(0)


_SPAWN_THEN = """
import os, sys, time
from reasoner.verifiers.isolation import IsolatedWorker
w = IsolatedWorker()
print(w.call(os.getpid, timeout=30), flush=True)
{then}
"""


def _run_parent(then: str) -> subprocess.Popen[str]:
    code = _SPAWN_THEN.format(then=then)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-c", code]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def test_worker_is_cleaned_up_at_interpreter_exit() -> None:
    parent = _run_parent("")
    out, _ = parent.communicate(timeout=60)
    assert parent.returncode == 0
    assert _wait_gone(int(out), within_s=0.5)


def test_worker_exits_when_parent_is_killed() -> None:
    parent = _run_parent("time.sleep(60)")
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    assert _wait_gone(pid, within_s=5)
