"""The run folder: resolved config, manifest, results appended per problem, and the summary.

results.jsonl is the source of truth. A line is written and fsynced as each problem finishes;
a line cut short by a kill is dropped on resume, so a resumed run redoes at most the problems
that were in flight and never loses one that finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from reasoner.errors import ConfigError

# Keys a resumed run may change without invalidating finished results.
RESUMABLE_KEYS = {"limit", "out", "progress", "ray"}


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.yaml"
        self.results_path = self.path / "results.jsonl"
        self.summary_path = self.path / "summary.json"
        self.manifest_path = self.path / "manifest.json"
        self.sessions_path = self.path / "sessions.jsonl"

    def prepare(self, config: dict[str, Any]) -> None:
        """Create the folder, or check that an existing one was made with the same config."""
        self.path.mkdir(parents=True, exist_ok=True)
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
        _write_atomic(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def load_results(self) -> list[dict[str, Any]]:
        """Finished rows; a torn last line (killed mid-write) is cut off the file."""
        if not self.results_path.is_file():
            return []
        rows: list[dict[str, Any]] = []
        good_bytes = 0
        with open(self.results_path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                try:
                    rows.append(json.loads(raw))
                except json.JSONDecodeError:
                    break
                good_bytes += len(raw)
        if good_bytes != self.results_path.stat().st_size:
            with open(self.results_path, "r+b") as f:
                f.truncate(good_bytes)
        return rows

    def append_result(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with open(self.results_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def append_session(self, session: dict[str, Any]) -> None:
        with open(self.sessions_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(session) + "\n")

    def load_sessions(self) -> list[dict[str, Any]]:
        if not self.sessions_path.is_file():
            return []
        return [json.loads(line) for line in self.sessions_path.read_text().splitlines() if line]

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        _write_atomic(self.manifest_path, json.dumps(manifest, indent=2) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if key not in old and new[key] in (None, False):
                continue  # a setting added since the run was made, left off: nothing changed
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
