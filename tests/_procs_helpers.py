"""Targets for the processes tests/test_procs.py spawns: importable by name in a fresh
interpreter."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection


def start_grandchild_and_wait(conn: Connection) -> None:
    """A child that starts a child of its own (vLLM's EngineCore starting its worker) without
    reasoner's help: it inherits reasoner's main through multiprocessing itself."""
    grandchild = mp.get_context("spawn").Process(target=time.sleep, args=(600,))
    grandchild.start()
    conn.send((os.getpid(), grandchild.pid, getattr(sys.modules["__main__"], "__spec__", None)))
    time.sleep(600)


def report_main(conn: Connection) -> None:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    conn.send(getattr(spec, "name", None))
