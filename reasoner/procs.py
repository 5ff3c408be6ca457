"""Child processes that reasoner starts: they never re-run the caller's script, and they die
with the process that started them.

multiprocessing's "spawn" start method (the only one vLLM uses on CPU, and the one reasoner's
verifier workers use because forking a process that holds engine threads can deadlock) starts
a fresh interpreter that first re-imports the parent's ``__main__``. From a script without an
``if __name__ == "__main__":`` guard that re-runs the script in the child (which then tries to
start its own children and fails with "An attempt has been made to start a new process before
the current process has finished its bootstrapping phase"); from ``python -`` the child looks
for a file named ``<stdin>`` and dies. Inside :func:`reasoner_children`, a spawned child runs
this package's own :mod:`reasoner.child_main` as its ``__main__`` instead, whatever the caller
is: a plain script, ``python -``, ``python -c``, a notebook, a thread or a Ray task.

That main also makes the child die with its parent. A parent killed with SIGKILL runs no
cleanup, and vLLM's EngineCore (hundreds of MB) and its worker (the model's weights and the KV
cache, several GB) used to live on under PID 1. ``PR_SET_PDEATHSIG`` is not used: it fires
when the *thread* that started the child exits, not the process, and engines are started from
threads (``reasoner serve`` starts AsyncLLM on its event-loop thread, verifier pools start
from thread-pool threads). Instead each child waits on a pidfd of its parent (Linux 5.3+;
polling ``getppid`` elsewhere) and SIGKILLs itself when the parent is gone. Its own children
(vLLM's worker under the EngineCore) watch it in turn, so a whole tree goes within a second.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import spawn
from pathlib import Path
from typing import Any

#: The module every child started inside :func:`reasoner_children` runs as its ``__main__``.
CHILD_MAIN = "reasoner.child_main"
#: The pid of the process that starts a child, as the child finds it in its environment.
PARENT_PID_ENV = "REASONER_PARENT_PID"
_POLL_S = 0.5

_state = threading.local()
_install_lock = threading.Lock()
_original_preparation: Callable[[str], dict[str, Any]] | None = None


@contextmanager
def reasoner_children() -> Iterator[None]:
    """multiprocessing processes that this thread starts inside the block ("spawn" or
    "forkserver") run :data:`CHILD_MAIN` as their ``__main__``, not the caller's.

    Only this thread is affected, and only while the block lasts: a caller's own processes
    keep importing the caller's ``__main__`` as they need to. The child's process object
    (its target and arguments) is pickled by reference as usual, so targets must be importable
    module-level functions; nothing reasoner starts needs the caller's ``__main__``.
    """
    _install()
    if os.environ.get(PARENT_PID_ENV) != str(os.getpid()):
        os.environ[PARENT_PID_ENV] = str(os.getpid())
    depth = getattr(_state, "depth", 0)
    _state.depth = depth + 1
    try:
        yield
    finally:
        _state.depth = depth


def _install() -> None:
    """Wraps `multiprocessing.spawn.get_preparation_data` (what the spawn and forkserver
    Popen classes send a child before it unpickles its process object) once per process."""
    global _original_preparation
    with _install_lock:
        if _original_preparation is not None:
            return
        _original_preparation = spawn.get_preparation_data
        spawn.get_preparation_data = _preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    assert _original_preparation is not None
    data = _original_preparation(name)
    if getattr(_state, "depth", 0):
        data.pop("init_main_from_path", None)
        data["init_main_from_name"] = CHILD_MAIN
    return data


def watch_parent() -> None:
    """Called by :data:`CHILD_MAIN` in each child: SIGKILL this process once its parent has
    exited. Also names this process as the parent its own children must watch."""
    parent = os.getppid()
    claimed = _int(os.environ.get(PARENT_PID_ENV))
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    if claimed is not None and claimed != parent and not _alive(claimed):
        # The parent died before this interpreter got here, and we were re-parented.
        _die()
    threading.Thread(
        target=_wait_then_die, args=(parent,), name="reasoner-parent-watch", daemon=True
    ).start()


def _wait_then_die(parent: int) -> None:
    pidfd = _pidfd(parent)
    if os.getppid() != parent:  # gone between getppid() and pidfd_open()
        _die()
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable when the process has exited
    else:
        while os.getppid() == parent:
            time.sleep(_POLL_S)
    _die()


def _pidfd(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # an old kernel (ENOSYS), a sandbox that forbids it, or gone (ESRCH)
        return None
    return fd


def _alive(pid: int) -> bool:
    """A zombie counts as gone: a parent killed together with its own parent stays one for as
    long as nobody reaps it (PID 1 in a container may never)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _die() -> None:
    # Nobody is left to read this process's results; SIGKILL skips atexit hooks and
    # multiprocessing finalizers that could block on the dead parent.
    os.kill(os.getpid(), signal.SIGKILL)


class Terminated(KeyboardInterrupt):
    """SIGTERM delivered the way Ctrl-C is, so that every cleanup written for Ctrl-C (closing
    the engine, keeping finished results, "re-run to resume") runs for it too."""


def interrupt_on_sigterm() -> None:
    """From the main thread of a command: the first SIGTERM raises :class:`Terminated` there;
    a second one, during that cleanup, ends the process at once (children still go, through
    their parent watch)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated(f"received {signal.Signals(signum).name}")
