"""The transformers backend serves PEFT adapters per request: each loaded once, switched per
batch, the base model for requests without one, and a folder rewritten in place reloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _tiny_model import make_tiny_model

from reasoner.errors import ModelError
from reasoner.models.config import ModelConfig
from reasoner.models.hf_transformers import TransformersGenerator
from reasoner.types import ChatMessage, Completion, GenerationRequest, SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, test_model_path: Path) -> dict[str, str]:
    """The tiny model and two adapters with random (non-zero) weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    model_path = make_tiny_model(root / "model", test_model_path)
    paths = {"model": model_path}
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(model_path)
        config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


def _request(adapter: str | None) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatMessage("user", "Count to five."),),
        sampling=SamplingParams(max_tokens=8, logprobs=1),
        adapter=adapter,
    )


def _logprobs(completion: Completion) -> list[float]:
    assert completion.logprobs is not None
    return [round(lp.logprob, 5) for lp in completion.logprobs]


def _generator(model: str) -> TransformersGenerator:
    return TransformersGenerator(model, ModelConfig(name=model, dtype="float32", batch_size=4))


def test_each_request_gets_its_own_adapter_or_the_base(tiny: dict[str, str]) -> None:
    base = _logprobs(_generator(tiny["model"]).generate([_request(None)])[0][0])
    generator = _generator(tiny["model"])
    a, none, b = (
        _logprobs(out[0])
        for out in generator.generate([_request(tiny["a"]), _request(None), _request(tiny["b"])])
    )
    assert none == base
    assert a != base and b != base and a != b
    assert _logprobs(generator.generate([_request(tiny["a"])])[0][0]) == a
    assert len(generator._adapter_names) == 2  # loaded once each


def test_an_adapter_rewritten_in_place_is_reloaded(tiny: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "round"
    shutil.copytree(tiny["a"], folder)
    generator = _generator(tiny["model"])
    first = _logprobs(generator.generate([_request(str(folder))])[0][0])
    shutil.copy(Path(tiny["b"]) / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    second = _logprobs(generator.generate([_request(str(folder))])[0][0])
    b = _logprobs(_generator(tiny["model"]).generate([_request(tiny["b"])])[0][0])
    assert first != second and second == b


def test_a_generator_around_a_training_policy_takes_no_adapter(tiny: dict[str, str]) -> None:
    loaded = _generator(tiny["model"])
    fixed = TransformersGenerator.from_model(loaded.model, loaded.tokenizer, loaded.config)
    assert fixed.generate([_request(None)])[0][0].completion_tokens > 0
    with pytest.raises(ModelError, match="takes no per-request adapter"):
        fixed.generate([_request(tiny["a"])])
    with pytest.raises(ModelError, match="not a PEFT adapter folder"):
        loaded.generate([_request(tiny["model"])])
