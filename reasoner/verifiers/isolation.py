"""Run untrusted-in-time checks (sympy can hang for minutes) in a worker process we can kill.

signal.alarm only works on the main thread of the main interpreter, and verifiers run on
ThreadPool threads, under vLLM engine threads and inside ProcessPool workers. So the time limit
is enforced from outside: the parent waits on a pipe and SIGKILLs the worker when time is up.
Workers are started with "spawn" because forking a process that holds engine threads can
deadlock the child, under `reasoner_children` so that they never re-run the caller's script
(a script without a main guard, `python -`, a notebook, a Ray task) and exit with their parent.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from reasoner.procs import reasoner_children
from reasoner.tools.process import Timeout

T = TypeVar("T")

_CTX = mp.get_context("spawn")
_READY = "ready"
# Starting a worker (a fresh interpreter importing sympy) is not charged to a call's timeout.
_START_TIMEOUT_S = 120.0


class VerifierError(Exception):
    """A check could not produce an answer; never to be read as a wrong answer."""


class VerifierTimeout(VerifierError, Timeout):
    pass


class VerifierCrashed(VerifierError):
    pass


class VerifierFailed(VerifierError):
    """The checked function raised in the worker; the exception itself may not unpickle here."""

    def __init__(self, remote_type: str, remote_message: str) -> None:
        super().__init__(remote_type, remote_message)  # both args, so it pickles back intact
        self.remote_type = remote_type
        self.remote_message = remote_message

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.remote_message}"


def _run_job(job: bytes) -> tuple[Any, ...]:
    try:
        fn, args = pickle.loads(job)
        return ("ok", fn(*args))
    except BaseException as exc:  # SystemExit too: the worker outlives a bad job
        return ("err", type(exc).__name__, str(exc))


def _serve(conn: Connection, initializer: Callable[[], object] | None) -> None:
    # Ctrl-C reaches the whole process group; the parent decides whether we die. A parent
    # killed outright is noticed by reasoner.child_main, which ends this process too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()
    conn.send(_READY)
    while True:
        try:
            job = conn.recv_bytes()
        except EOFError:
            return
        reply = _run_job(job)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result must not cost the worker
            conn.send(("err", type(exc).__name__, f"result could not be sent back: {exc}"))


class IsolatedWorker:
    """One persistent worker process, started lazily and replaced after a timeout or crash."""

    def __init__(self, initializer: Callable[[], object] | None = None) -> None:
        self._initializer = initializer
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def call(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """`fn` must be importable by name in a fresh interpreter (module level, not a lambda)."""
        job = pickle.dumps((fn, args))
        with self._lock:
            proc, conn = self._ensure_started()
            try:
                reply = self._exchange(proc, conn, job, timeout)
            except BaseException:
                # A job may still be running: only a fresh worker keeps replies in step with calls.
                self._discard()
                raise
        if reply[0] == "ok":
            result: T = reply[1]
            return result
        raise VerifierFailed(reply[1], reply[2])

    def close(self) -> None:
        with self._lock:
            self._discard()

    def _exchange(self, proc: BaseProcess, conn: Connection, job: bytes, timeout: float) -> Any:
        try:
            conn.send_bytes(job)
            if not conn.poll(timeout):
                raise VerifierTimeout(f"check timed out after {timeout:g}s")
            return conn.recv()
        except (EOFError, OSError) as exc:
            proc.join(timeout=1.0)
            raise VerifierCrashed(f"worker died (exit code {proc.exitcode})") from exc

    def _ensure_started(self) -> tuple[BaseProcess, Connection]:
        if self._proc is not None and self._conn is not None and self._proc.is_alive():
            return self._proc, self._conn
        self._discard()
        parent_end, child_end = _CTX.Pipe()
        proc = _CTX.Process(target=_serve, args=(child_end, self._initializer), daemon=True)
        with reasoner_children():
            proc.start()
        child_end.close()  # so that the worker's death reads as EOF here
        self._proc, self._conn = proc, parent_end
        try:
            if not parent_end.poll(_START_TIMEOUT_S) or parent_end.recv() != _READY:
                raise VerifierCrashed(f"worker did not start within {_START_TIMEOUT_S:g}s")
        except (EOFError, OSError) as exc:
            self._discard()
            raise VerifierCrashed(f"worker exited during startup ({exc!r})") from exc
        except BaseException:
            self._discard()
            raise
        return proc, parent_end

    def _discard(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5.0)
            if self._proc.exitcode is not None:
                self._proc.close()
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None


class WorkerPool:
    """Hands each calling thread an idle worker, so `size` checks run truly in parallel."""

    def __init__(self, size: int, initializer: Callable[[], object] | None = None) -> None:
        if size < 1:
            raise ValueError(f"a WorkerPool needs at least one worker, got size={size}")
        self._workers = [IsolatedWorker(initializer) for _ in range(size)]
        # LIFO: light load keeps reusing the warm worker instead of starting every one of them.
        self._idle: queue.LifoQueue[IsolatedWorker] = queue.LifoQueue()
        for worker in reversed(self._workers):
            self._idle.put(worker)

    @property
    def size(self) -> int:
        return len(self._workers)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        worker = self._idle.get()
        try:
            return worker.call(fn, *args, timeout=timeout)
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stops the processes; the pool stays usable and restarts them on demand."""
        for worker in self._workers:
            worker.close()
