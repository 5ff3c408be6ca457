"""Generators: one contract, three backends. `load_generator` picks and starts one."""

from __future__ import annotations

import importlib.util
import logging
import time

from reasoner.errors import ModelError
from reasoner.models import engine_logs
from reasoner.models.base import Generator
from reasoner.models.config import ModelConfig
from reasoner.models.dtype import resolve_dtype
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

logger = logging.getLogger(__name__)


def resolve_backend(config: ModelConfig) -> str:
    if config.backend != "auto":
        return config.backend
    if config.base_url:
        return "openai"
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def load_generator(config: ModelConfig) -> tuple[Generator, ResolvedModel | None]:
    """The generator and, for local backends, the resolved weights (for the run manifest)."""
    backend = resolve_backend(config)
    config = config.with_adapter_support()
    if backend == "openai":
        from reasoner.models.openai_server import OpenAIServerGenerator

        logger.info("model: %s (server %s)", config.name, config.base_url)
        return OpenAIServerGenerator(config), None
    resolved = resolve_model(config.name)
    _announce(config, backend)
    started = time.perf_counter()
    generator: Generator
    if backend == "vllm":
        from reasoner.models.vllm_engine import VLLMGenerator

        generator = VLLMGenerator(resolved.path, config)
    elif backend == "transformers":
        from reasoner.models.hf_transformers import TransformersGenerator

        generator = TransformersGenerator(resolved.path, config)
    else:  # pragma: no cover - pydantic validates
        raise ModelError(f"unknown backend {backend!r}")
    logger.info("engine ready in %.0f s", time.perf_counter() - started)
    return generator, resolved


def _announce(config: ModelConfig, backend: str) -> None:
    """What the terminal says before the engine's long start: model, dtype and why, and
    where the engine's own logs go."""
    logger.info("model: %s (%s)", config.name, backend)
    logger.info("%s", resolve_dtype(config.dtype).line())
    log = engine_logs.destination()
    if log is not None and backend == "vllm":
        logger.info("engine log: %s (--verbose shows it here)", log)
