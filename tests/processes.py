"""Process-tree helpers for the slow tests that kill a `reasoner` command and count what it
leaves behind (read from /proc, so they see re-parented orphans too)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for child, parent in parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie runs nothing; reaping it is its new parent's job


def name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def survivors(family: set[int], wait_s: float = 30.0) -> list[str]:
    """The processes of `family` still running after up to `wait_s` ("a few seconds", with
    room for a loaded machine)."""
    deadline = time.monotonic() + wait_s
    while any(map(running, family)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [f"{pid} {name(pid)}" for pid in family if running(pid)]


def kill_all(family: set[int]) -> None:
    """Whatever a failed test left behind."""
    for pid in filter(running, family):
        os.kill(pid, signal.SIGKILL)
