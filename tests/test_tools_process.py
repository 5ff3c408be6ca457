"""reasoner.tools.process: the deadline kills the whole process group, the output cap truncates
and says so, exit codes and start failures are reported."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from reasoner.tools import process
from reasoner.verifiers.isolation import VerifierTimeout
from reasoner.verifiers.lean.repl import LeanReplTimeout

# Starts a grandchild that would sleep for a minute, says its pid, then waits on it.
_PARENT_OF_SLEEPER = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "child.wait()\n"
)


def _gone(pid: int) -> bool:
    """Exited, or a zombie waiting for a reaper that is not us (PID 1 in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int) -> bool:
    for _ in range(100):  # SIGKILL is asynchronous: give the kernel a moment
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_deadline_kills_the_grandchild_too() -> None:
    run = process.run([sys.executable, "-c", _PARENT_OF_SLEEPER], timeout_s=3)
    assert run.timed_out and not run.truncated
    grandchild = int(run.stdout.split()[0])
    assert grandchild != os.getpid()
    assert _wait_gone(grandchild), f"grandchild {grandchild} outlived the deadline"
    assert run.returncode < 0  # killed by our signal, not an exit of its own


def test_output_over_the_cap_is_truncated_and_the_run_killed() -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 4096)\n"
    run = process.run([sys.executable, "-c", code], timeout_s=60, max_output_bytes=10_000)
    assert run.truncated and not run.timed_out
    assert run.stdout == "x" * 10_000
    assert run.returncode < 0


def test_output_under_the_cap_is_kept_whole_with_input_and_exit_code() -> None:
    code = (
        "import sys\nprint(sys.stdin.read().upper())\nprint('err', file=sys.stderr)\nsys.exit(3)\n"
    )
    run = process.run(
        [sys.executable, "-c", code], timeout_s=60, input="héllo", max_output_bytes=100
    )
    assert (run.returncode, run.timed_out, run.truncated) == (3, False, False)
    assert run.stdout == "HÉLLO\n"
    assert run.stderr == "err\n"


def test_a_missing_executable_is_a_clear_start_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-prover")
    with pytest.raises(process.StartFailed, match="no-such-prover"):
        process.run([missing], timeout_s=5)
    with pytest.raises(process.StartFailed, match="No such file"):
        process.start([missing])


def test_stop_kills_a_long_lived_process_group() -> None:
    proc = process.start([sys.executable, "-c", _PARENT_OF_SLEEPER], stdin=process.DEVNULL)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    assert process.stop(proc) < 0
    assert _wait_gone(grandchild)
    process.stop(proc)  # a second stop of a reaped process is harmless


def test_every_timeout_is_one_type() -> None:
    assert issubclass(VerifierTimeout, process.Timeout)
    assert issubclass(LeanReplTimeout, process.Timeout)
    assert not issubclass(process.Timeout, OSError)  # broken-pipe handlers must not eat it


def test_memory_limit_caps_the_address_space() -> None:
    code = "bytearray(4 * 2**30)"
    proc = process.start([sys.executable, "-c", code], stdin=process.DEVNULL, memory_limit_mb=512)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"MemoryError" in err
