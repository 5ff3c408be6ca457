"""Shared fixtures. The slow tier shares one vLLM engine per test run (starting it takes
20-60 s on CPU); the fast tier uses the transformers backend on the same embedded model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reasoner.models.config import ModelConfig
from reasoner.models.embedded import cache_dir
from reasoner.resources import data_root

TEST_MODEL = "smollm2-135m-instruct"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if root is None or not (root / "gsm8k" / "test.jsonl").is_file():
        pytest.fail("benchmark data not found: set REASONER_DATA_DIR to the shared data folder")
    return root


@pytest.fixture(scope="session")
def test_model_path() -> Path:
    """The converted SmolLM2 folder (`make test` fetches it before pytest runs)."""
    from reasoner.models.embedded import materialize

    return materialize(TEST_MODEL)


@pytest.fixture(scope="session")
def hf_generator(test_model_path: Path) -> Iterator[object]:
    from reasoner.models.hf_transformers import TransformersGenerator

    yield TransformersGenerator(str(test_model_path), ModelConfig(name=TEST_MODEL, dtype="float32"))


@pytest.fixture(scope="session")
def vllm_generator(test_model_path: Path) -> Iterator[object]:
    from reasoner.models.vllm_engine import VLLMGenerator

    generator = VLLMGenerator(
        str(test_model_path),
        # float32: vLLM on CPU is not batch-invariant, and bf16 rounding makes greedy outputs
        # flip with batch composition far more often; the resume tests compare runs whose
        # batches differ
        # LoRA on: the training and loop tests serve their adapters from this engine
        ModelConfig(
            name=TEST_MODEL, max_model_len=2048, kv_cache_gb=1, dtype="float32", enable_lora=True
        ),
    )
    yield generator
    generator.close()


def pytest_report_header(config: pytest.Config) -> str:
    return f"reasoner model cache: {cache_dir()}"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """For tests on the tiny model (modules opt in with `pytestmark`): its matmuls take
    microseconds, and on a busy machine two OpenMP threads spend milliseconds per op waiting
    for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, test_model_path: Path) -> str:
    """A tiny randomly initialised Llama with SmolLM2's tokenizer (tests/_tiny_model.py)."""
    from _tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), test_model_path)
