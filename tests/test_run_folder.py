from __future__ import annotations

from pathlib import Path

import pytest

from reasoner.errors import ConfigError
from reasoner.runner.run_folder import RunFolder


def test_torn_last_line_is_dropped_and_finished_rows_kept(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.prepare({"a": 1})
    folder.append_result({"problem": {"id": "1"}})
    folder.append_result({"problem": {"id": "2"}})
    with open(folder.results_path, "a") as f:
        f.write('{"problem": {"id": "3"')  # killed mid-write
    rows = folder.load_results()
    assert [r["problem"]["id"] for r in rows] == ["1", "2"]
    assert folder.results_path.read_text().endswith("}\n")
    folder.append_result({"problem": {"id": "3"}})
    assert [r["problem"]["id"] for r in folder.load_results()] == ["1", "2", "3"]


def test_resume_with_a_different_config_is_refused(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.prepare({"seed": 0, "limit": 5, "model": {"name": "a"}})
    folder.prepare({"seed": 0, "limit": 50, "model": {"name": "a"}})  # a longer run is fine
    with pytest.raises(ConfigError, match=r"model\.name: 'a' -> 'b'"):
        folder.prepare({"seed": 0, "limit": 50, "model": {"name": "b"}})


def test_a_setting_added_since_the_run_was_made_resumes_only_when_off(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.prepare({"seed": 0, "strategy": {"name": "best-of-n"}})
    # a run folder from before `strategy.oracle` existed resumes with it off
    folder.prepare({"seed": 0, "strategy": {"name": "best-of-n", "oracle": False}})
    other = RunFolder(tmp_path / "other")
    other.prepare({"seed": 0, "strategy": {"name": "best-of-n"}})
    with pytest.raises(ConfigError, match=r"strategy\.oracle: None -> True"):
        other.prepare({"seed": 0, "strategy": {"name": "best-of-n", "oracle": True}})
