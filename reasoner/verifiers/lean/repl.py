"""Lean REPL processes: one persistent `repl` per slot, killed from outside when a command
overruns.

Importing Mathlib costs tens of seconds and gigabytes, so a REPL is kept alive and the env that
an import header produced is reused by every later proof with the same header. Proofs can loop
forever (`set_option maxHeartbeats 0` is common in benchmark headers), and verifiers run on
worker threads where signal.alarm does not work, so the time limit is a reader thread plus a
queue wait, and overrunning kills the REPL's whole process group (`lake env` starts the repl as
a child). The REPL is then restarted on the next command; its cached envs died with it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from reasoner.tools import process
from reasoner.verifiers.lean.protocol import (
    ProtocolError,
    ReplResponse,
    ResponseFramer,
    encode_command,
    parse_response,
)

_EOF = object()


class LeanReplError(Exception):
    """The REPL could not answer; never to be read as a wrong proof."""


class LeanReplTimeout(LeanReplError, process.Timeout):
    pass


class LeanReplCrashed(LeanReplError):
    pass


class LeanHeaderError(LeanReplError):
    """The import header itself failed (a missing module, an unbuilt Mathlib)."""


class LeanRepl:
    """One REPL process, started lazily. Thread-safe: commands are serialised by a lock.

    `memory_limit_mb` is an address-space cap (RLIMIT_AS), which counts the Mathlib .olean
    files Lean maps into memory (about 5 GB) as well as the heap: set it well above that.
    """

    def __init__(
        self,
        command: Sequence[str],
        project_dir: str | os.PathLike[str] | None = None,
        *,
        timeout_s: float = 60.0,
        import_timeout_s: float = 600.0,
        memory_limit_mb: int | None = 32768,
    ) -> None:
        self.command = list(command)
        self.project_dir = Path(project_dir) if project_dir is not None else None
        self.timeout_s = timeout_s
        self.import_timeout_s = import_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[object] = queue.Queue()
        self._header_envs: dict[str, int] = {}
        self.starts = 0  # how many processes this slot has started (tests watch restarts)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def has_header(self, imports: str) -> bool:
        return imports in self._header_envs and self._alive()

    @property
    def loaded_headers(self) -> int:
        return len(self._header_envs) if self._alive() else 0

    def run(self, cmd: str, env: int | None = None, timeout_s: float | None = None) -> ReplResponse:
        """One command. A timeout, a crash or unreadable output raises and kills the process."""
        return self.request(encode_command(cmd, env), timeout_s)

    def request(self, payload: bytes, timeout_s: float | None = None) -> ReplResponse:
        """Any one request, already encoded (a command, a tactic; see TacticRepl), and its
        response. A timeout, a crash or unreadable output raises and kills the process, and
        with it every env and proof state it held."""
        with self._lock:
            return self._request_locked(payload, self.timeout_s if timeout_s is None else timeout_s)

    def run_with_imports(
        self, imports: str, cmd: str, timeout_s: float | None = None
    ) -> ReplResponse:
        """`cmd` in the env of `imports`, importing them first unless this process already has."""
        with self._lock:
            env = self._header_env_locked(imports)
            limit = self.timeout_s if timeout_s is None else timeout_s
            return self._request_locked(encode_command(cmd, env), limit)

    def header_env(self, imports: str) -> int:
        with self._lock:
            return self._header_env_locked(imports)

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _header_env_locked(self, imports: str) -> int:
        cached = self._header_envs.get(imports)
        if cached is not None and self._alive():
            return cached
        response = self._request_locked(encode_command(imports, None), self.import_timeout_s)
        if response.repl_error is not None or response.errors or response.env is None:
            detail = response.repl_error or "; ".join(m.describe() for m in response.errors)
            raise LeanHeaderError(f"the import header failed: {detail or 'no env returned'}")
        self._header_envs[imports] = response.env
        return response.env

    def _request_locked(self, payload: bytes, timeout_s: float) -> ReplResponse:
        proc = self._ensure_started()
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload)
            proc.stdin.flush()
        except OSError as exc:
            self._kill()
            raise LeanReplCrashed(f"the Lean REPL exited ({exc})") from exc
        try:
            reply = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            self._kill()
            raise LeanReplTimeout(f"Lean took longer than {timeout_s:g}s") from None
        if reply is _EOF:
            code = self._kill()
            raise LeanReplCrashed(f"the Lean REPL exited (exit code {code})")
        try:
            return parse_response(str(reply))
        except ProtocolError as exc:
            self._kill()
            raise LeanReplCrashed(str(exc)) from exc

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._alive():
            return self._proc
        self._kill()
        try:  # its own process group, so a kill reaches lake's child
            proc = process.start(
                self.command,
                cwd=self.project_dir,
                stderr=process.DEVNULL,
                memory_limit_mb=self.memory_limit_mb,
            )
        except process.StartFailed as exc:
            raise LeanReplCrashed(str(exc)) from exc
        self._proc, self._replies = proc, queue.Queue()
        self.starts += 1
        assert proc.stdout is not None
        threading.Thread(
            target=_read_responses, args=(proc.stdout, self._replies), daemon=True
        ).start()
        return proc

    def _kill(self) -> int | None:
        """Kill the group and forget its envs; returns the exit code where there was a process."""
        proc, self._proc = self._proc, None
        self._header_envs.clear()
        return None if proc is None else process.stop(proc)


def _read_responses(stdout: IO[bytes], replies: queue.Queue[object]) -> None:
    framer = ResponseFramer()
    try:
        for raw in stdout:
            text = framer.push(raw.decode("utf-8", errors="replace"))
            if text is not None:
                replies.put(text)
    except (OSError, ValueError):  # the stream was closed by a kill
        pass
    replies.put(_EOF)


class LeanReplPool:
    """`size` REPLs sharing work; a proof goes to an idle REPL that has already imported its
    header when there is one, since a fresh import costs far more than any proof check."""

    def __init__(
        self,
        size: int,
        command: Sequence[str],
        project_dir: str | os.PathLike[str] | None = None,
        *,
        timeout_s: float = 60.0,
        import_timeout_s: float = 600.0,
        memory_limit_mb: int | None = 32768,
    ) -> None:
        if size < 1:
            raise ValueError("a LeanReplPool needs at least one REPL")
        self.repls = [
            LeanRepl(
                command,
                project_dir,
                timeout_s=timeout_s,
                import_timeout_s=import_timeout_s,
                memory_limit_mb=memory_limit_mb,
            )
            for _ in range(size)
        ]
        self._idle = list(self.repls)
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def acquire(self, imports: str) -> Iterator[LeanRepl]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._idle))
            repl = _pick(self._idle, imports)
            self._idle.remove(repl)
        try:
            yield repl
        finally:
            with self._cond:
                self._idle.append(repl)
                self._cond.notify()

    def run_with_imports(
        self, imports: str, cmd: str, timeout_s: float | None = None
    ) -> ReplResponse:
        with self.acquire(imports) as repl:
            return repl.run_with_imports(imports, cmd, timeout_s)

    def close(self) -> None:
        for repl in self.repls:
            repl.close()


def _pick(idle: list[LeanRepl], imports: str) -> LeanRepl:
    """Prefer a REPL with the header loaded, then one with nothing loaded (an import there
    evicts no other header's env), then any."""
    for repl in idle:
        if repl.has_header(imports):
            return repl
    for repl in idle:
        if repl.loaded_headers == 0:
            return repl
    return idle[0]
