"""The training run folder: resolved config, manifest, per-step metrics, checkpoints, adapter.

```
OUT/config.yaml       the resolved stage config (a resumed run must match it)
OUT/manifest.json     versions, base model hash, data digests, seed, hardware
OUT/metrics.jsonl     one row per step (and per evaluation), appended and fsynced
OUT/checkpoints/      what a killed run resumes from
OUT/adapter/          the result: a PEFT adapter folder (or model/ for full-weight ZO)
OUT/summary.json      written last: a run with a summary is finished
```

metrics.jsonl holds each (kind, step) once: on resume, rows after the checkpoint's step are cut
(those steps run again) and a row already there is not written twice.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reasoner.runner.heldout import TRAIN_QUESTIONS_FILE
from reasoner.runner.run_folder import RunFolder

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"  # full-weight ZO writes a whole model folder instead
CONFIG_IN_ADAPTER = "reasoner-training.yaml"
MANIFEST_IN_ADAPTER = "reasoner-manifest.json"


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: set[tuple[str, int]] = set()

    def rows(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def resume_at(self, step: int) -> None:
        """Keep the rows up to `step` (the checkpoint a run resumes from): later steps are
        trained again and logged again. A torn last line goes too."""
        kept = [row for row in self.rows() if int(row.get("step", 0)) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        tmp.replace(self.path)
        self._seen = {(str(r.get("kind", "train")), int(r.get("step", 0))) for r in kept}

    def append(self, row: dict[str, Any]) -> bool:
        """False (and nothing written) when this kind of row for this step is already there."""
        key = (str(row.get("kind", "train")), int(row["step"]))
        if key in self._seen:
            return False
        self._seen.add(key)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return True


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Complete rows only: a last line without its newline was cut short by a kill."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


class TrainingRun:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.folder = RunFolder(self.path)  # config.yaml / manifest.json / summary.json
        self.metrics = MetricsLog(self.path / "metrics.jsonl")
        self.checkpoints = self.path / "checkpoints"
        self.adapter_dir = self.path / ADAPTER_DIR
        self.model_dir = self.path / MODEL_DIR

    def prepare(self, config: dict[str, Any]) -> None:
        """Create the folder, or check that an existing one was made with the same config."""
        self.folder.prepare(config)
        self.checkpoints.mkdir(exist_ok=True)

    @property
    def finished(self) -> bool:
        return self.folder.summary_path.is_file()

    def result(self) -> Path:
        summary = json.loads(self.folder.summary_path.read_text())
        return self.path / summary["result"]

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        if not self.folder.manifest_path.is_file():
            self.folder.write_manifest({"created": datetime.now(UTC).isoformat(), **manifest})

    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.folder.manifest_path.read_text())
        return data

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.folder.write_summary(summary)

    def finish_result(self, staged: Path, final: Path, config: dict[str, Any]) -> None:
        """Move a fully written result folder into place, with the config and manifest beside
        the weights so the folder explains itself wherever it is copied."""
        import yaml

        (staged / CONFIG_IN_ADAPTER).write_text(yaml.safe_dump(config, sort_keys=False))
        (staged / MANIFEST_IN_ADAPTER).write_text(json.dumps(self.manifest(), indent=2) + "\n")
        questions = self.path / TRAIN_QUESTIONS_FILE
        if questions.is_file():  # what the result was trained on, for held-out checks at eval
            shutil.copyfile(questions, staged / TRAIN_QUESTIONS_FILE)
        if final.exists():
            shutil.rmtree(final)
        staged.replace(final)


def complete_checkpoints(folder: Path, marker: str, prefix: str) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints whose `marker` file was written (it is written last, so
    a checkpoint cut short by a kill has none), oldest first."""
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_dir() and path.name.startswith(prefix) and (path / marker).is_file():
                try:
                    found.append((int(path.name[len(prefix) :]), path))
                except ValueError:
                    continue
    return sorted(found)


def remove_incomplete(folder: Path, marker: str, prefix: str) -> None:
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_dir() and path.name.startswith(prefix) and not (path / marker).is_file():
                shutil.rmtree(path, ignore_errors=True)


def prune(checkpoints: Iterable[tuple[int, Path]], keep: int) -> None:
    ordered = sorted(checkpoints)
    for _, path in ordered[: max(0, len(ordered) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def default_out(stage: str) -> str:
    return f"runs/train-{stage}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
