"""How to load and serve a model. Part of every run's resolved config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from reasoner.models.embedded import DEFAULT_MODEL

Backend = Literal["auto", "vllm", "transformers", "openai"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = DEFAULT_MODEL
    backend: Backend = "auto"
    dtype: str = "auto"  # bf16 where GPU/CPU have bf16 kernels, else float32 (models/dtype.py)
    max_model_len: int = 4096
    seed: int = 0
    adapter: str | None = None  # a PEFT adapter folder applied to every request
    # vLLM engine
    enforce_eager: bool | None = None  # None: eager on CPU (18 s start instead of 60-90 s)
    enable_prefix_caching: bool = True
    kv_cache_gb: int | None = None  # CPU only: KV cache size in GiB (default 4)
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    enable_lora: bool = False
    max_lora_rank: int = 16
    # OpenAI-compatible server
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    served_model_name: str | None = None  # defaults to `name`
    max_concurrency: int = 16
    max_retries: int = 5
    request_timeout_s: float = 600.0
    # transformers
    batch_size: int = 16
