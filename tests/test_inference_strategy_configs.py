"""The sample configs of best-of-n, self-refine and program-aided load, and their strategy
options validate, before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasoner.config import EvalConfig, build_config, load_yaml
from reasoner.resources import asset_dir
from reasoner.runner.evaluate import plan_eval
from reasoner.strategies.best_of_n import BestOfN
from reasoner.strategies.program_aided import ProgramAided
from reasoner.strategies.self_refine import SelfRefine

CONFIGS = {
    "gsm8k-best-of-8.yaml": BestOfN,
    "gsm8k-self-refine.yaml": SelfRefine,
    "gsm8k-program-aided.yaml": ProgramAided,
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sample_config_plans(name: str, data_dir: Path) -> None:
    path = asset_dir("configs") / name
    config = build_config(EvalConfig, load_yaml(path), [f"data_dir={data_dir}"], str(path))
    plan = plan_eval(config)
    assert isinstance(plan.strategy, CONFIGS[name])
    assert plan.strategy_config.n == config.strategy.n


def test_a_typo_in_a_sample_configs_options_names_the_key(data_dir: Path) -> None:
    path = asset_dir("configs") / "gsm8k-self-refine.yaml"
    config = build_config(
        EvalConfig,
        load_yaml(path),
        [f"data_dir={data_dir}", "strategy.options.max_rouns=2"],
        str(path),
    )
    with pytest.raises(ValueError, match=r"strategy\.options\.max_rouns"):
        plan_eval(config)
