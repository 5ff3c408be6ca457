"""The run folder: resolved config, manifest, results appended per problem, and the summary.

results.jsonl is the source of truth. A line is written and fsynced as each problem finishes;
a last line cut short by a kill is moved aside (to results.jsonl.torn) on resume, so a resumed
run redoes at most the problems that were in flight and never loses one that finished. A line
that cannot be read anywhere else is not a kill's doing: resume stops and names it rather than
drop the finished lines after it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

from reasoner.errors import ConfigError, RunFolderError
from reasoner.runs import RESULTS_FILE, scan_results, write_text_atomic

# Keys a resumed run may change without invalidating finished results.
RESUMABLE_KEYS = {"limit", "out", "progress", "ray"}


ENGINE_LOG = "engine.log"  # written by the engine from its start (models/engine_logs.py)
LOCK_FILE = ".lock"  # flock()ed by the process writing the folder; holds its pid


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.results_path = self.path / RESULTS_FILE
        self.summary_path = self.path / "summary.json"
        self.manifest_path = self.path / "manifest.json"
        self.sessions_path = self.path / "sessions.jsonl"
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        """Hold the folder for this process until `unlock()` or its exit (the kernel drops a
        dead process's flock, SIGKILL included): a second writer (another `reasoner eval` on
        the same `--out`, a `rescore` of a run still going) is refused at once instead of
        interleaving lines with it. Creates the folder. `prepare` does not lock: the commands
        that write a folder over time (eval, iterate, merge, rescore) hold it explicitly and
        release it in a `finally`."""
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(
                f"{self.path} is being written by {holder}; wait for it to finish, or choose "
                "another --out"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)  # not only close: a forked child shares it
            self._lock.close()
            self._lock = None

    @contextmanager
    def held(self) -> Iterator[RunFolder]:
        """`lock()` for the `with` block, released however it ends (for the commands that hold
        the folder from start to end; eval locks later, once its engine is up)."""
        self.lock()
        try:
            yield self
        finally:
            self.unlock()

    def check(self, config: dict[str, Any]) -> None:
        """Refuse, without writing anything, a path that cannot hold this run: a file, a folder
        of other files (not a run folder: taking it over would overwrite them), or a run made
        with a different config."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a run folder; choose another --out")
        existing = next((p for p in (self.path, *self.path.parents) if p.exists()), None)
        if existing is not None and existing != self.path and not existing.is_dir():
            raise ConfigError(f"{self.path}: {existing} is a file, not a folder")
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{self.path}: {existing} is not writable; choose another --out")
        if self.path.is_dir() and not self.config_path.is_file():
            # a failed start leaves only the engine's log, which says why it failed
            if any(p.name not in (ENGINE_LOG, LOCK_FILE) for p in self.path.iterdir()):
                raise ConfigError(
                    f"{self.path} holds files but no config.yaml, so it is not a reasoner run "
                    "folder; choose a new --out (an empty or missing folder)"
                )
            return
        if self.config_path.is_file():
            previous = yaml.safe_load(self.config_path.read_text()) or {}
            changed = _diff(
                {k: v for k, v in previous.items() if k not in RESUMABLE_KEYS},
                {k: v for k, v in config.items() if k not in RESUMABLE_KEYS},
            )
            if changed:
                raise ConfigError(
                    f"{self.path} holds a run made with a different config "
                    f"({'; '.join(changed)}); resume with the same settings or choose a new --out"
                )

    def prepare(self, config: dict[str, Any]) -> None:
        """Create the folder, or check that an existing one was made with the same config.
        Call it once the run is sure to start (the engine loaded), so that a failed start
        leaves `--out` as it was."""
        self.check(config)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def load_results(self) -> list[dict[str, Any]]:
        """Finished rows, for resume: the one reader that writes. A torn last line (killed
        mid-write) is moved to results.jsonl.torn so the next append starts on a fresh line;
        an unreadable line before the last is an error naming it, and the file is left as it
        was. Commands that only read use `reasoner.runs.read_results`, which never writes."""
        if not self.results_path.is_file():
            return []
        try:
            scan = scan_results(self.results_path)
        except RunFolderError as exc:
            raise ConfigError(
                f"{exc}, so resume stops here: repair or delete that line, then re-run"
            ) from None
        if scan.torn:
            self._set_aside_tail(scan.good_bytes)
        return scan.rows

    def _set_aside_tail(self, keep_bytes: int) -> None:
        """Move everything after `keep_bytes` to results.jsonl.torn (appended): never deleted."""
        with open(self.results_path, "r+b") as f:
            f.seek(keep_bytes)
            tail = f.read()
            with open(self.results_path.with_name(self.results_path.name + ".torn"), "ab") as side:
                side.write(tail if tail.endswith(b"\n") else tail + b"\n")
                side.flush()
                os.fsync(side.fileno())
            f.truncate(keep_bytes)

    def append_result(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with open(self.results_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def write_results(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace results.jsonl with `rows` at once (a merge, a rescore): written to a temporary
        file, fsynced, then renamed over it, so a kill leaves the old file or the new one."""
        tmp = self.results_path.with_name(self.results_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.results_path)

    def append_session(self, session: dict[str, Any]) -> None:
        with open(self.sessions_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(session) + "\n")

    def load_sessions(self) -> list[dict[str, Any]]:
        if not self.sessions_path.is_file():
            return []
        return [json.loads(line) for line in self.sessions_path.read_text().splitlines() if line]

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=2) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if key not in old and new[key] in (None, False):
                continue  # a setting added since the run was made, left off: nothing changed
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
