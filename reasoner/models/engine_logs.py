"""Engine and library logs go to the run's `engine.log`, not the terminal.

Starting vLLM on a CPU prints a few hundred lines (vLLM's own logger, Triton and NUMA notices,
oneDNN, tcmalloc and OpenMP warnings from native code) before a run's progress bar, in the
parent and in the EngineCore child process and its worker. Most come from native libraries or
from child processes, which no Python logging setting reaches, so the route is at the file
descriptor level: while the engine starts, fd 1 and 2 point at `engine.log`, which the spawned
engine processes inherit for their whole life; afterwards the parent's own fds are restored (the
progress bar and summary reach the terminal) and the parent's `vllm` logger writes to the file.

`reasoner ... --verbose` (or REASONER_ENGINE_LOGS=terminal) keeps everything on the terminal.
The terminal itself gets a handful of lines through the `reasoner` logger: the model, the dtype
and why, where the engine log is, and how long the engine took to start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

#: "terminal": engine logs stream to the terminal as vLLM prints them (what `--verbose` sets)
ENV = "REASONER_ENGINE_LOGS"
#: the Python loggers whose records go to engine.log once the engine has started
ENGINE_LOGGERS = ("vllm",)

_destination: Path | None = None


def streaming() -> bool:
    """True when the user asked for engine logs on the terminal (`--verbose`)."""
    return os.environ.get(ENV, "").strip().lower() == "terminal"


def stream_to_terminal() -> None:
    """What `--verbose` does; inherited by any child process a command starts."""
    os.environ[ENV] = "terminal"


def log_engine_to(path: Path | None) -> None:
    """Send the logs of engines started from now on to `path` (None: to the terminal). A run
    calls this with its folder's engine.log before it loads its model."""
    global _destination
    _destination = path


@contextlib.contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Engines started inside the block log to `path`: a command that loads one engine for
    several runs (compare, iterate) keeps its logs in its own folder, not on the terminal."""
    log_engine_to(path)
    try:
        yield
    finally:
        log_engine_to(None)


def destination() -> Path | None:
    """Where engine logs go now; None when they stream to the terminal."""
    return None if streaming() else _destination


@contextlib.contextmanager
def engine_output() -> Iterator[Path | None]:
    """Around an engine's start: fd 1 and 2 (and so every child process started meanwhile)
    write to the engine log; on exit the parent's fds are restored and its `vllm` logger
    records go to the file. Does nothing when logs stream to the terminal."""
    path = destination()
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for fd in saved:
            os.dup2(log_fd, fd)
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log_fd)
        _python_loggers_to(path)


def _python_loggers_to(path: Path) -> None:
    """The parent's library loggers (configured at import, with a handler on stdout) write to
    the file from now on; the handler is replaced, so repeated starts do not stack them."""
    for name in ENGINE_LOGGERS:
        log = logging.getLogger(name)
        formatter = next((h.formatter for h in log.handlers if h.formatter), None)
        for handler in list(log.handlers):
            if isinstance(handler, logging.FileHandler):
                handler.close()
            log.removeHandler(handler)
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        handler.setFormatter(formatter or logging.Formatter("%(levelname)s %(name)s %(message)s"))
        log.addHandler(handler)
        log.propagate = False


class _TerminalHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it; tqdm shares it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_terminal(verbose: bool = False) -> None:
    """The `reasoner` logger's INFO lines (model, dtype, engine ready) on stderr, bare; with
    `verbose`, engine logs stream to the terminal too. Called once by the CLI."""
    if verbose:
        stream_to_terminal()
    log = logging.getLogger("reasoner")
    if not any(isinstance(h, _TerminalHandler) for h in log.handlers):
        handler = _TerminalHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
