"""Benchmark definitions (eval/*.yaml): which data, prompt, verifier and budget make a benchmark."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from reasoner.resources import asset_names, load_asset_yaml


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dataset: str
    split: str = "test"
    prompt: str = "math_cot"
    verifier: str = "math"
    max_tokens: int = 512


def available_benchmarks() -> list[str]:
    return asset_names("eval")


def load_benchmark(name: str) -> BenchmarkSpec:
    return load_asset_yaml("eval", name, BenchmarkSpec, "benchmark")
