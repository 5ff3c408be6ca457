"""Generators: one contract, three backends. `load_generator` picks and starts one."""

from __future__ import annotations

import importlib.util

from reasoner.errors import ModelError
from reasoner.models.base import Generator
from reasoner.models.config import ModelConfig
from reasoner.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS
from reasoner.models.resolve import ResolvedModel, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "Generator",
    "ModelConfig",
    "ResolvedModel",
    "load_generator",
    "resolve_backend",
    "resolve_model",
]


def resolve_backend(config: ModelConfig) -> str:
    if config.backend != "auto":
        return config.backend
    if config.base_url:
        return "openai"
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def load_generator(config: ModelConfig) -> tuple[Generator, ResolvedModel | None]:
    """The generator and, for local backends, the resolved weights (for the run manifest)."""
    backend = resolve_backend(config)
    if config.adapter is not None and not config.enable_lora:
        config = config.model_copy(update={"enable_lora": True})
    if backend == "openai":
        from reasoner.models.openai_server import OpenAIServerGenerator

        return OpenAIServerGenerator(config), None
    resolved = resolve_model(config.name)
    if backend == "vllm":
        from reasoner.models.vllm_engine import VLLMGenerator

        return VLLMGenerator(resolved.path, config), resolved
    if backend == "transformers":
        from reasoner.models.hf_transformers import TransformersGenerator

        return TransformersGenerator(resolved.path, config), resolved
    raise ModelError(f"unknown backend {backend!r}")  # pragma: no cover - pydantic validates
