"""reasoner.procs: children that run reasoner's main, die with their parent, and SIGTERM as
Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reasoner.procs import CHILD_MAIN

ROOT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).resolve().parent


def _python(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HELPERS)])}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(map(_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _running(pid)]


def test_only_children_started_inside_the_block_run_reasoners_main() -> None:
    code = """
import multiprocessing as mp
from _procs_helpers import report_main
from reasoner.procs import reasoner_children
ctx = mp.get_context("spawn")
for inside in (True, False, True):
    here, there = ctx.Pipe()
    child = ctx.Process(target=report_main, args=(there,))
    if inside:
        with reasoner_children():
            child.start()
    else:
        child.start()
    print(here.recv(), flush=True)
    child.join()
"""
    parent = _python(code)
    out, _ = parent.communicate(timeout=120)
    assert parent.returncode == 0
    # -c has no main of its own to re-run: outside the block the child keeps the default
    assert out.split() == [CHILD_MAIN, "None", CHILD_MAIN]


def test_a_killed_parent_takes_children_and_grandchildren_with_it() -> None:
    code = """
import multiprocessing as mp, time
from _procs_helpers import start_grandchild_and_wait
from reasoner.procs import reasoner_children
ctx = mp.get_context("spawn")
here, there = ctx.Pipe()
with reasoner_children():
    ctx.Process(target=start_grandchild_and_wait, args=(there,)).start()
child, grandchild, _ = here.recv()
print(child, grandchild, flush=True)
time.sleep(600)
"""
    parent = _python(code)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    try:
        assert len(pids) == 2 and all(map(_running, pids))
        parent.send_signal(signal.SIGKILL)  # no cleanup runs in the parent
        parent.wait()
        assert _gone_within(pids, 10) == []
    finally:
        for pid in filter(_running, pids):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_raises_terminated_in_the_main_thread() -> None:
    code = """
import time
from reasoner.procs import Terminated, interrupt_on_sigterm
interrupt_on_sigterm()
try:  # "ready" inside the try: the signal may land while print returns
    print("ready", flush=True)
    time.sleep(60)
except KeyboardInterrupt as exc:
    print(type(exc).__name__, isinstance(exc, Terminated), flush=True)
"""
    parent = _python(code)
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "ready"
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=30)
    assert out.split() == ["Terminated", "True"]
    assert parent.returncode == 0
