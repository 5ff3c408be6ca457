"""Benchmark definitions (eval/*.yaml): which data, prompt, verifier and budget make a benchmark."""

from __future__ import annotations

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from reasoner.errors import ConfigError, unknown_choice
from reasoner.resources import asset_dir


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dataset: str
    split: str = "test"
    prompt: str = "math_cot"
    verifier: str = "math"
    max_tokens: int = 512


def available_benchmarks() -> list[str]:
    return sorted(p.stem for p in asset_dir("eval").glob("*.yaml"))


def load_benchmark(name: str) -> BenchmarkSpec:
    path = asset_dir("eval") / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(unknown_choice("benchmark", name, available_benchmarks()))
    try:
        return BenchmarkSpec.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
