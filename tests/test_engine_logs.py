"""Engine logs to RUN/engine.log: child processes and native writes during the engine's start,
the parent's `vllm` logger afterwards; the terminal keeps reasoner's own lines."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reasoner.models import engine_logs

CHILD = (
    "import os, sys, time\n"
    "print('child stdout line', flush=True)\n"
    "os.write(2, b'child native stderr line\\n')\n"
    "time.sleep(0.5)\n"
    "os.write(2, b'child still writing after the parent restored its fds\\n')\n"
)


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(engine_logs.ENV, raising=False)
    vllm_logger = logging.getLogger("vllm")
    handlers, propagate = list(vllm_logger.handlers), vllm_logger.propagate
    yield
    engine_logs.log_engine_to(None)
    for handler in list(vllm_logger.handlers):
        vllm_logger.removeHandler(handler)
        handler.close()
    for handler in handlers:
        vllm_logger.addHandler(handler)
    vllm_logger.propagate = propagate


def _run_engine_like_start(log: Path) -> tuple[str, str]:
    """What a run does: pick the log, start a child process (the EngineCore) inside the
    window, then print to the terminal. Returns (terminal stdout+stderr, engine.log)."""
    script = (
        "import subprocess, sys, logging\n"
        "from pathlib import Path\n"
        "from reasoner.models import engine_logs\n"
        "engine_logs.configure_terminal()\n"
        f"engine_logs.log_engine_to(Path({str(log)!r}))\n"
        "with engine_logs.engine_output():\n"
        "    print('parent print during the start')\n"
        "    child = subprocess.Popen([sys.executable, '-c', sys.argv[1]])\n"
        "logging.getLogger('vllm').warning('parent vllm warning after the start')\n"
        "logging.getLogger('reasoner.models').info('engine ready in 1 s')\n"
        "print('progress bar')\n"
        "child.wait()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, CHILD], capture_output=True, text=True, check=True
    )
    return done.stdout + done.stderr, log.read_text()


def test_child_and_start_output_go_to_the_log_not_the_terminal(tmp_path: Path) -> None:
    terminal, log = _run_engine_like_start(tmp_path / "run" / "engine.log")
    for line in (
        "child stdout line",
        "child native stderr line",
        "child still writing after the parent restored its fds",
        "parent print during the start",
        "parent vllm warning after the start",
    ):
        assert line in log
        assert line not in terminal
    assert "engine ready in 1 s" in terminal
    assert "progress bar" in terminal


def test_verbose_streams_everything_to_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(engine_logs.ENV, "terminal")
    log = tmp_path / "engine.log"
    log.write_text("")
    terminal, logged = _run_engine_like_start(log)
    assert "child native stderr line" in terminal
    assert "parent print during the start" in terminal
    assert logged == ""


def test_no_destination_leaves_output_alone(capfd: pytest.CaptureFixture[str]) -> None:
    with engine_logs.engine_output() as path:
        print("still on the terminal")
    assert path is None
    assert "still on the terminal" in capfd.readouterr().out


def test_repeated_starts_do_not_stack_handlers(tmp_path: Path) -> None:
    engine_logs.log_engine_to(tmp_path / "engine.log")
    for _ in range(3):
        with engine_logs.engine_output():
            pass
    handlers = logging.getLogger("vllm").handlers
    assert len(handlers) == 1 and isinstance(handlers[0], logging.FileHandler)


def test_a_command_with_one_engine_for_many_runs_logs_it_to_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compare and iterate load their engine inside `logging_to(OUT/engine.log)`; afterwards
    (even after an error) later engines are not theirs."""
    monkeypatch.delenv(engine_logs.ENV, raising=False)
    log = tmp_path / "engine.log"
    with pytest.raises(RuntimeError), engine_logs.logging_to(log):
        assert engine_logs.destination() == log
        raise RuntimeError("the engine did not start")
    assert engine_logs.destination() is None
