"""`reasoner compare` config handling: shared settings, matched budgets, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reasoner.config import config_file
from reasoner.errors import ConfigError
from reasoner.runner.compare import build_configs


def _write(path: Path, data: dict[str, object]) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_flags_apply_to_every_config_and_each_run_gets_its_own_folder(tmp_path: Path) -> None:
    a = _write(tmp_path / "sc.yaml", {"strategy": {"name": "self-consistency", "n": 4}})
    b = _write(tmp_path / "greedy.yaml", {"strategy": {"name": "greedy"}, "limit": 3})
    configs = build_configs([a, b], ["limit=5", "strategy.budget_calls=2"], tmp_path / "out")
    assert [label for label, _ in configs] == ["sc", "greedy"]
    for label, config in configs:
        assert config.limit == 5  # the command line wins over the file
        assert config.strategy.budget_calls == 2
        assert config.out == str(tmp_path / "out" / label)


def test_configs_that_disagree_on_the_problems_or_model_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", {"limit": 5})
    b = _write(tmp_path / "b.yaml", {"limit": 6})
    with pytest.raises(ConfigError, match="b: limit differs from a's"):
        build_configs([a, b], [], tmp_path / "out")
    c = _write(tmp_path / "c.yaml", {"limit": 5, "model": {"name": "smollm2-135m-instruct"}})
    with pytest.raises(ConfigError, match="c: model differs"):
        build_configs([a, c], [], tmp_path / "out")


def test_config_lookup_by_shipped_name_and_missing_names() -> None:
    assert config_file("gsm8k-sc8").name == "gsm8k-sc8.yaml"
    with pytest.raises(ConfigError, match="no-such-config"):
        config_file("no-such-config")


def test_two_configs_with_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    a = _write(tmp_path / "sc.yaml", {})
    b = _write(tmp_path / "x" / "sc.yaml", {})
    with pytest.raises(ConfigError, match="two configs named 'sc'"):
        build_configs([a, b], [], tmp_path / "out")
