from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoner.errors import ConfigError, DatasetError
from reasoner.runner.datasets import FieldMap, load_dataset, load_manifest, read_jsonl


def test_gsm8k_loads_with_checksum_and_gold_answers(data_dir: Path) -> None:
    loaded = load_dataset(load_manifest("gsm8k"), "test", str(data_dir))
    assert len(loaded.problems) == 1319
    first = loaded.problems[0]
    assert first.id == "0" and first.answer == "18"
    assert loaded.sha256 == load_manifest("gsm8k").splits["test"].sha256
    # thousands separators are stripped from gold answers
    assert all("," not in p.answer for p in loaded.problems if p.answer)


def test_math500_uses_ids_and_metadata(data_dir: Path) -> None:
    loaded = load_dataset(load_manifest("math500"), "test", str(data_dir))
    assert len(loaded.problems) == 500
    first = loaded.problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.metadata == {"subject": "Precalculus", "level": 2}
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_unknown_dataset_and_split_list_the_choices(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"choose one of: .*gsm8k, .*math500"):
        load_manifest("gsm9k")
    with pytest.raises(ConfigError, match="test, train"):
        load_dataset(load_manifest("gsm8k"), "validation", str(data_dir))


def test_changed_data_fails_its_checksum(tmp_path: Path, data_dir: Path) -> None:
    target = tmp_path / "gsm8k"
    target.mkdir()
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()
    (target / "test.jsonl").write_text("\n".join(lines[:5]) + "\n")
    with pytest.raises(DatasetError, match="sha256"):
        load_dataset(load_manifest("gsm8k"), "test", str(tmp_path))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [
            json.dumps({"q": "1+1?", "a": "2"}),
            '{"q": "broken',
            json.dumps({"q": "2+2?"}),
        ],
    )
    fields = FieldMap(question="q", answer="a")
    with pytest.raises(DatasetError, match=r"mine\.jsonl:2: not valid JSON|mine\.jsonl:2:"):
        read_jsonl(path, fields)
    loaded = read_jsonl(path, fields, skip_bad=True)
    assert [p.question for p in loaded.problems] == ["1+1?"]
    assert len(loaded.bad_rows) == 2
    assert "mine.jsonl:3: missing field(s) ['a']" in loaded.bad_rows[1]


def test_user_file_with_field_mapping_and_gsm8k_answers(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "own.jsonl",
        [
            json.dumps({"uid": "a", "prompt": "How many?", "solution": "so 1,200\n#### 1,200"}),
            json.dumps({"uid": "b", "prompt": "And now?", "solution": "#### 7"}),
        ],
    )
    loaded = read_jsonl(
        path, FieldMap(question="prompt", answer="solution", id="uid"), answer_format="gsm8k"
    )
    assert [(p.id, p.answer) for p in loaded.problems] == [("a", "1200"), ("b", "7")]


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dup.jsonl", [json.dumps({"id": 1, "question": "x", "answer": "1"})] * 2
    )
    with pytest.raises(DatasetError, match="not unique"):
        read_jsonl(path, FieldMap(id="id"))
