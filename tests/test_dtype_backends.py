"""The backends that load weights in this process (transformers generation, the training
policy) follow `dtype: auto` as resolved from the (mocked) machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny_model import make_tiny_model

from reasoner.models import dtype as dtype_module
from reasoner.models.config import ModelConfig
from reasoner.models.hf_transformers import TransformersGenerator
from reasoner.training.config import PolicySettings
from reasoner.training.policy import load_policy

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
AMX = AVX2_ONLY | {"avx512f", "amx_tile", "amx_bf16"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, test_model_path: Path) -> str:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), test_model_path)


def _machine(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]) -> None:
    monkeypatch.setattr(dtype_module, "_machine_cpu_flags", lambda: flags)
    monkeypatch.setattr(dtype_module, "_cuda_bf16", lambda: (False, False))


@pytest.mark.parametrize(("flags", "expected"), [(AVX2_ONLY, "float32"), (AMX, "bfloat16")])
def test_transformers_backend_follows_the_cpu(
    tiny: str, monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], expected: str
) -> None:
    _machine(monkeypatch, flags)
    generator = TransformersGenerator(tiny, ModelConfig(name=tiny))
    assert generator.model.dtype == getattr(torch, expected)
    assert generator.dtype_choice is not None
    assert generator.dtype_choice.dtype == expected
    assert generator.dtype_choice.requested == "auto"


def test_transformers_backend_keeps_an_explicit_dtype(
    tiny: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch, AVX2_ONLY)
    generator = TransformersGenerator(tiny, ModelConfig(name=tiny, dtype="bfloat16"))
    assert generator.model.dtype == torch.bfloat16
    assert generator.dtype_choice is not None and "slow" in generator.dtype_choice.reason


@pytest.mark.parametrize(
    ("flags", "purpose", "expected"),
    [
        (AVX2_ONLY, "training", torch.float32),
        (AMX, "training", torch.bfloat16),
        (AMX, "zo", torch.float32),
    ],
)
def test_training_policy_follows_the_cpu_and_zo_stays_float32(
    tiny: str,
    monkeypatch: pytest.MonkeyPatch,
    flags: frozenset[str],
    purpose: str,
    expected: torch.dtype,
) -> None:
    _machine(monkeypatch, flags)
    policy = load_policy(PolicySettings(name=tiny), purpose=purpose)  # type: ignore[arg-type]
    assert policy.model.dtype == expected
    assert policy.dtype.requested == "auto"
