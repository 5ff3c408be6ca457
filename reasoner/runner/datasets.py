"""Dataset manifests (data/*.yaml) and loading problems from JSONL files or the hub.

A malformed row stops the run with its file and line, or, with `skip_bad`, is counted and left
out; nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from reasoner.errors import ConfigError, DatasetError, unknown_choice
from reasoner.resources import asset_names, data_root, load_asset_yaml
from reasoner.types import Problem

AnswerFormat = Literal["plain", "gsm8k"]


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str | None = None
    count: int | None = None


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = "question"
    answer: str = "answer"
    id: str | None = None  # None: the row's position in the file


class DatasetManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    license: str = "unknown"
    local_dir: str | None = None
    hub: dict[str, str] | None = None
    splits: dict[str, SplitSpec] = {}
    fields: FieldMap = FieldMap()
    metadata: list[str] = []
    answer_format: AnswerFormat = "plain"


def available_datasets() -> list[str]:
    return asset_names("data")


def load_manifest(name: str) -> DatasetManifest:
    return load_asset_yaml("data", name, DatasetManifest, "dataset")


@dataclass
class LoadedDataset:
    problems: list[Problem]
    source: str  # a file path or hub id
    sha256: str | None
    bad_rows: list[str] = field(default_factory=list)  # "file:line: reason" of skipped rows


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gold_answer(raw: Any, answer_format: AnswerFormat) -> str:
    text = str(raw).strip()
    if answer_format == "gsm8k":
        match = _GSM8K_ANSWER.search(text)
        if match is None:
            raise ValueError("no '#### <answer>' in the answer field")
        text = match.group(1).replace(",", "").strip()
    return text


def _row_to_problem(
    row: Any, index: int, fields: FieldMap, metadata: list[str], answer_format: AnswerFormat
) -> Problem:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = [f for f in (fields.question, fields.answer) if f not in row]
    if fields.id is not None and fields.id not in row:
        missing.append(fields.id)
    if missing:
        raise ValueError(f"missing field(s) {missing}; the row has {sorted(row)}")
    question = row[fields.question]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"field {fields.question!r} is not a non-empty string")
    return Problem(
        id=str(row[fields.id]) if fields.id is not None else str(index),
        question=question,
        answer=gold_answer(row[fields.answer], answer_format),
        metadata={k: row[k] for k in metadata if k in row},
    )


def read_jsonl(
    path: Path,
    fields: FieldMap,
    metadata: list[str] | None = None,
    answer_format: AnswerFormat = "plain",
    skip_bad: bool = False,
) -> LoadedDataset:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    raw = path.read_bytes()
    problems: list[Problem] = []
    bad: list[str] = []
    for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            problems.append(
                _row_to_problem(
                    json.loads(line),
                    len(problems) + len(bad),
                    fields,
                    metadata or [],
                    answer_format,
                )
            )
        except (json.JSONDecodeError, ValueError) as exc:
            reason = f"{path}:{lineno}: {exc}"
            if not skip_bad:
                raise DatasetError(
                    reason + " (pass --skip-bad to skip and count such rows)"
                ) from None
            bad.append(reason)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: problem ids are not unique (field {fields.id!r})")
    return LoadedDataset(problems, str(path), hashlib.sha256(raw).hexdigest(), bad)


def load_dataset(
    manifest: DatasetManifest, split: str, data_dir: str | None = None, skip_bad: bool = False
) -> LoadedDataset:
    """From `data_dir`, $REASONER_DATA_DIR or the project's data folder; else from the hub."""
    if split not in manifest.splits:
        raise ConfigError(unknown_choice(f"split of {manifest.name}", split, manifest.splits))
    spec = manifest.splits[split]
    root = Path(data_dir).expanduser() if data_dir else data_root()
    if root is not None and manifest.local_dir is not None:
        path = root / manifest.local_dir / spec.file
        if path.is_file():
            loaded = read_jsonl(
                path, manifest.fields, manifest.metadata, manifest.answer_format, skip_bad
            )
            if spec.sha256 and loaded.sha256 != spec.sha256:
                raise DatasetError(
                    f"{path}: sha256 {loaded.sha256} differs from the manifest's {spec.sha256} "
                    f"(data/{manifest.name}.yaml); the file is not the published {manifest.name}"
                )
            return loaded
    if manifest.hub is None:
        raise DatasetError(f"dataset {manifest.name!r}: no local copy under {root} and no hub id")
    return _load_from_hub(manifest, split, skip_bad, searched=root)


def _load_from_hub(
    manifest: DatasetManifest, split: str, skip_bad: bool, searched: Path | None
) -> LoadedDataset:
    assert manifest.hub is not None
    hub_id = manifest.hub["path"]
    try:
        import datasets

        rows = datasets.load_dataset(hub_id, manifest.hub.get("name"), split=split)
    except Exception as exc:
        where = (
            f"{searched}/{manifest.local_dir}"
            if searched
            else "no data folder (set REASONER_DATA_DIR)"
        )
        raise DatasetError(
            f"dataset {manifest.name!r}: not found locally ({where}) and the hub copy {hub_id!r} "
            f"could not be loaded: {type(exc).__name__}: {exc}"
        ) from None
    problems, bad = [], []
    digest = hashlib.sha256()
    for index, row in enumerate(rows):
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        try:
            problems.append(
                _row_to_problem(
                    row, index, manifest.fields, manifest.metadata, manifest.answer_format
                )
            )
        except ValueError as exc:
            if not skip_bad:
                raise DatasetError(f"{hub_id}[{split}] row {index}: {exc}") from None
            bad.append(f"{hub_id}[{split}] row {index}: {exc}")
    return LoadedDataset(problems, f"hub:{hub_id}", digest.hexdigest(), bad)
