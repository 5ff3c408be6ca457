"""Dataset manifests (data/*.yaml) and loading problems from JSONL / JSON-array files or the hub.

A malformed row stops the run with its file and line (or element index), or, with `skip_bad`, is
counted and left out; nothing is silently dropped. Rows that a split's `where` filter leaves out
belong to another split and are not bad rows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, model_validator

from reasoner.errors import ConfigError, DatasetError, unknown_choice
from reasoner.resources import asset_names, data_root, load_asset_yaml
from reasoner.types import Problem

# plain: the field as is; gsm8k: the number after "####"; number: a numeric field ("27.0" -> "27",
# "025" -> "25"); number_prefix: a trailing "(unit)" dropped ("9 (apples)" -> "9").
AnswerFormat = Literal["plain", "gsm8k", "number", "number_prefix"]
# jsonl: one object a line; json: one JSON array of objects (Logic-LM's files).
FileFormat = Literal["jsonl", "json"]


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str | None = None
    count: int | None = None
    # Some files hold several splits (miniF2F, ProofNet): keep the rows whose fields equal these.
    where: dict[str, str] = {}


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = "question"
    # A Jinja template over the row, for a question spread over several fields (SVAMP's Body and
    # Question, Logic-LM's context, question and options). It replaces `question` when set.
    question_template: str | None = None
    answer: str | None = "answer"  # None: no gold answer (a Lean proof is checked, not compared)
    id: str | None = None  # None: the row's position in the file


class DatasetManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    license: str = "unknown"
    local_dir: str | None = None
    hub: dict[str, str] | None = None
    splits: dict[str, SplitSpec] = {}
    format: FileFormat = "jsonl"
    fields: FieldMap = FieldMap()
    # Row fields kept as problem metadata; a mapping renames them ({premises_fol: premises-FOL}),
    # since templates and verifiers read the keys as identifiers.
    metadata: list[str] | dict[str, str] = []
    # Metadata keys that carry the gold (a reference formalisation, an equation, grading tests,
    # the solution's type): `blind()` strips them with the answer, which is always gold.
    gold_fields: list[str] = []
    answer_format: AnswerFormat = "plain"
    non_commercial: bool = False  # the data's licence forbids commercial use (ASDiv: CC BY-NC)
    license_note: str = ""  # what a user must know beyond the licence's name

    @model_validator(mode="after")
    def _gold_fields_are_metadata(self) -> DatasetManifest:
        known = metadata_fields(self.metadata)
        unknown = [key for key in self.gold_fields if key not in known]
        if unknown:
            raise ValueError(
                f"gold_fields {unknown} are not metadata keys; the metadata keys are "
                f"{sorted(known) or 'none'}"
            )
        return self


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
_UNIT_SUFFIX = re.compile(r"\s*\([^()]*\)$")
_TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


def gold_answer(raw: Any, answer_format: AnswerFormat) -> str:
    text = str(raw).strip()
    if answer_format == "gsm8k":
        match = _GSM8K_ANSWER.search(text)
        if match is None:
            raise ValueError("no '#### <answer>' in the answer field")
        text = match.group(1).replace(",", "").strip()
    elif answer_format == "number":
        text = _tidy_number(text)
    elif answer_format == "number_prefix":
        # ASDiv: "9 (apples)"; about 8% of its answers are words or times ("Yes", "3:30 p.m."),
        # which keep their text.
        text = _UNIT_SUFFIX.sub("", text).strip()
        if _is_number(text):
            text = _tidy_number(text)
    return text


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _tidy_number(text: str) -> str:
    """Float columns say "27.0" and AIME says "025"; a gold that reads like a model's "27" keeps
    the exact-match shortcut of the math verifier, and self-consistency votes, honest."""
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        raise ValueError(f"answer {text!r} is not a number") from None
    return str(int(value)) if value.is_integer() else repr(value)


@functools.lru_cache(maxsize=32)
def _template(source: str) -> jinja2.Template:
    """Compiled once per manifest, not once per row."""
    return _TEMPLATES.from_string(source)


def metadata_fields(metadata: list[str] | dict[str, str]) -> dict[str, str]:
    """Metadata key -> row field."""
    return dict(metadata) if isinstance(metadata, dict) else {k: k for k in metadata}


def _question(row: dict[str, Any], fields: FieldMap) -> str:
    if fields.question_template is None:
        question = row.get(fields.question)
    else:
        try:
            question = _template(fields.question_template).render(row)
        except jinja2.TemplateError as exc:
            raise ValueError(f"question_template failed: {exc}") from None
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"the question ({fields.question!r}) is not a non-empty string")
    return question


def _row_to_problem(
    row: Any,
    index: int,
    fields: FieldMap,
    metadata: list[str] | dict[str, str],
    answer_format: AnswerFormat,
    gold_fields: Sequence[str] = (),
) -> Problem:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    required = [fields.answer, fields.id]
    if fields.question_template is None:
        required.append(fields.question)
    missing = [f for f in required if f is not None and f not in row]
    if missing:
        raise ValueError(f"missing field(s) {missing}; the row has {sorted(row)}")
    answer = None if fields.answer is None else gold_answer(row[fields.answer], answer_format)
    return Problem(
        id=str(row[fields.id]) if fields.id is not None else str(index),
        question=_question(row, fields),
        answer=answer,
        metadata={k: row[f] for k, f in metadata_fields(metadata).items() if f in row},
        gold_fields=tuple(gold_fields),
    )


def _rows(raw: bytes, path: Path, file_format: FileFormat) -> Iterator[tuple[str, Any]]:
    """(where, row) pairs; `where` is "file:line" or "file[index]", for error messages. A row
    that is not valid JSON comes as the exception, so the caller decides whether to skip it."""
    text = raw.decode("utf-8", errors="replace")
    if file_format == "json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: expected a JSON array, got {type(rows).__name__}")
        for index, row in enumerate(rows):
            yield f"{path}[element {index}]", row
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"{path}:{lineno}", exc


def _selected(row: Any, where: dict[str, str]) -> bool:
    """A row that is not an object is kept, so that it is reported rather than filtered away."""
    if not where or not isinstance(row, dict):
        return True
    return all(row.get(k) == v for k, v in where.items())


def read_jsonl(
    path: Path,
    fields: FieldMap,
    metadata: list[str] | dict[str, str] | None = None,
    answer_format: AnswerFormat = "plain",
    skip_bad: bool = False,
    *,
    file_format: FileFormat = "jsonl",
    where: dict[str, str] | None = None,
    gold_fields: Sequence[str] = (),
) -> LoadedDataset:
    """Despite the name, also reads a JSON array (`file_format="json"`)."""
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    raw = path.read_bytes()
    problems: list[Problem] = []
    bad: list[str] = []
    for location, row in _rows(raw, path, file_format):
        if not _selected(row, where or {}):
            continue
        try:
            if isinstance(row, json.JSONDecodeError):
                raise row
            problems.append(
                _row_to_problem(
                    row,
                    len(problems) + len(bad),
                    fields,
                    metadata or [],
                    answer_format,
                    gold_fields,
                )
            )
        except (json.JSONDecodeError, ValueError) as exc:
            reason = f"{location}: {exc}"
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
                path,
                manifest.fields,
                manifest.metadata,
                manifest.answer_format,
                skip_bad,
                file_format=manifest.format,
                where=spec.where,
                gold_fields=manifest.gold_fields,
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
                    row,
                    index,
                    manifest.fields,
                    manifest.metadata,
                    manifest.answer_format,
                    manifest.gold_fields,
                )
            )
        except ValueError as exc:
            if not skip_bad:
                raise DatasetError(f"{hub_id}[{split}] row {index}: {exc}") from None
            bad.append(f"{hub_id}[{split}] row {index}: {exc}")
    return LoadedDataset(problems, f"hub:{hub_id}", digest.hexdigest(), bad)
