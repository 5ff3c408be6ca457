"""How to load and serve a model. Part of every run's resolved config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reasoner.models.embedded import DEFAULT_MODEL

Backend = Literal["auto", "vllm", "transformers", "openai"]
#: weight dtypes every backend loads; "auto" lets the backend choose for the machine
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: an embedded alias (reasoner models), a local folder, a .gguf file or a hub id
    name: str = DEFAULT_MODEL
    #: auto: vLLM where it is installed, else transformers; openai when base_url is set
    backend: Backend = "auto"
    dtype: Dtype = "auto"  # bf16 where GPU/CPU have bf16 kernels, else float32 (models/dtype.py)
    #: the context window in tokens (prompt + completion); longer problems are `error` rows
    max_model_len: int = Field(default=4096, ge=1)
    #: the engine's seed
    seed: int = 0
    adapter: str | None = None  # a PEFT adapter folder applied to every request
    # vLLM engine
    enforce_eager: bool | None = None  # None: eager on CPU (18 s start instead of 60-90 s)
    #: reuse the KV cache of shared prompt prefixes (search trees, n samples)
    enable_prefix_caching: bool = True
    kv_cache_gb: int | None = Field(
        default=None, ge=1
    )  # CPU only: KV cache size in GiB (default 4)
    #: share of GPU memory vLLM may take (GPU only)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    #: GPUs one engine spans (GPU only)
    tensor_parallel_size: int = Field(default=1, ge=1)
    #: start the engine with LoRA support, so requests can name an adapter
    enable_lora: bool = False
    #: the largest LoRA rank the engine can serve
    max_lora_rank: int = 16
    # OpenAI-compatible server
    base_url: str | None = None
    #: the environment variable holding the server's API key (openai backend)
    api_key_env: str = "OPENAI_API_KEY"
    served_model_name: str | None = None  # defaults to `name`
    #: requests in flight at once (openai backend)
    max_concurrency: int = Field(default=16, ge=1)
    #: retries of a failed request, with backoff (openai backend)
    max_retries: int = Field(default=5, ge=0)
    #: seconds before a request to the server is abandoned (openai backend)
    request_timeout_s: float = Field(default=600.0, gt=0)
    # transformers
    batch_size: int = Field(default=16, ge=1)

    def with_adapter_support(self, later: bool = False) -> ModelConfig:
        """This config with LoRA on where an adapter will be served: `adapter` is set (every
        request carries it), or `later` (a loop serves adapters it has yet to train). The one
        place that decides it, so every engine a run starts agrees."""
        if self.enable_lora or not (later or self.adapter is not None):
            return self
        return self.model_copy(update={"enable_lora": True})
