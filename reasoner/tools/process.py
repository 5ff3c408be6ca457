"""Start a command with a deadline, and kill everything it started when time is up.

Every process starts in its own session (``start_new_session``), so it leads a fresh process
group and one SIGKILL to the group also reaches what it forked: `lake env` starting the Lean
REPL, bwrap starting the sandbox, a shell starting a prover. The deadline is enforced by the
caller waiting on pipes, never by ``signal.alarm``, so it works from any thread (verifiers run
on pool and engine threads). A grandchild that starts a session of its own leaves the group;
the sandbox catches those with a pid namespace.

Two shapes of use:

- :func:`run` for a one-shot command: input in, output (capped) and an exit code out.
- :func:`start` and :func:`stop` for a long-lived process that the caller talks to (the Lean
  REPL); its request/response protocol stays with the caller, which raises a subclass of
  :class:`Timeout` when a reply is late.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
_CHUNK = 65536


class ProcessError(Exception):
    """A process gave no answer; never to be read as a wrong answer. Deliberately not an
    OSError, so that handlers of broken pipes do not swallow a timeout."""


class Timeout(ProcessError):
    """A process overran its deadline and was killed. The verifier worker's and the Lean
    REPL's timeouts subclass it, so ``except Timeout`` catches every kind."""


class StartFailed(ProcessError):
    """The command could not be started: a missing executable, no permission to run it, a
    binary built for another architecture."""


@dataclass(frozen=True)
class Completed:
    """How a one-shot run ended. `stdout` and `stderr` hold at most the run's output cap in
    bytes each, decoded as UTF-8 with undecodable bytes replaced."""

    returncode: int  # negative: killed by that signal (ours, after a timeout or the cap)
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False
    truncated: bool = False  # the output passed the cap, and the process was killed for it


def start(
    argv: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = PIPE,
    stdout: int | None = PIPE,
    stderr: int | None = PIPE,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    memory_limit_mb: int | None = None,
) -> subprocess.Popen[bytes]:
    """Starts `argv` as the leader of a new session; `memory_limit_mb` caps its address space
    (RLIMIT_AS, inherited by its children). Raises StartFailed."""
    limit = None if memory_limit_mb is None else memory_limit_mb * 2**20
    try:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            preexec_fn=None if limit is None else functools.partial(_limit_memory, limit),
        )
    except OSError as exc:
        raise StartFailed(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc


def _limit_memory(limit_bytes: int) -> None:
    # Runs between fork and exec: only a C call, no Python imports or locks.
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILLs the process group that :func:`start` gave `proc`: the process and everything
    it started that stayed in its session. Safe to call when they have already exited."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group is gone
    except PermissionError:  # a member changed uid; the leader at least is ours
        with contextlib.suppress(OSError):
            proc.kill()


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Kills the group, closes this side's pipes and reaps the process; returns its exit code."""
    kill_group(proc)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    return proc.wait()


def run(
    argv: Sequence[str],
    *,
    timeout_s: float,
    input: str | bytes = b"",
    max_output_bytes: int | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> Completed:
    """Runs `argv` until it exits and closes its output, or until `timeout_s` has passed or
    either stream has written more than `max_output_bytes`; in the last two cases the whole
    group is killed and the result says why. `input` (text is sent as UTF-8) is served from a
    file, so a process that writes before it reads cannot deadlock against us. Raises only
    StartFailed (and, after killing the group, whatever interrupts the wait)."""
    data = input.encode("utf-8") if isinstance(input, str) else input
    with tempfile.TemporaryFile() as stdin:
        stdin.write(data)
        stdin.seek(0)
        began = time.monotonic()
        proc = start(argv, stdin=stdin, cwd=cwd, env=env, pass_fds=pass_fds)
    with proc:  # closes the pipes and reaps the process on the way out
        try:
            out, err, timed_out, truncated = _collect(proc, began + timeout_s, max_output_bytes)
        except BaseException:
            kill_group(proc)
            raise
    return Completed(
        proc.returncode,
        out.decode("utf-8", errors="replace"),
        err.decode("utf-8", errors="replace"),
        time.monotonic() - began,
        timed_out,
        truncated,
    )


def _collect(
    proc: subprocess.Popen[bytes], deadline: float, cap: int | None
) -> tuple[bytes, bytes, bool, bool]:
    """Reads both pipes until EOF, the cap or the deadline, and kills the group on the last
    two. Never holds more than the cap (plus one chunk) of a stream in memory."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out: bytearray(), err: bytearray()}
    timed_out = truncated = False
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and not truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(remaining):
                buffer = buffers[key.fd]
                size = _CHUNK if cap is None else min(_CHUNK, cap + 1 - len(buffer))
                chunk = os.read(key.fd, size)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer += chunk
                if cap is not None and len(buffer) > cap:
                    del buffer[cap:]
                    truncated = True
                    break
    if not (timed_out or truncated):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out or truncated:
        kill_group(proc)
    proc.wait()
    return bytes(buffers[out]), bytes(buffers[err]), timed_out, truncated
