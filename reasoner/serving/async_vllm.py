"""The vLLM engine `vllm serve` itself runs (`AsyncLLM`), as a Generator that any number of
threads may call at once.

`reasoner serve` uses it rather than stepping `vllm.LLM` from one thread: AsyncLLM hands a new
request to the engine the moment it arrives, so it joins the very next engine step, where a
stepping loop could only add it after the step in flight returned (one step late, which at
short answers costs several per cent of throughput). Each call's requests run as tasks on one
event loop in a background thread; a call made under a CancelToken (the server's per-request
timeout) cancels its tasks, and AsyncLLM aborts their engine requests.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from reasoner.errors import ModelError
from reasoner.models.base import Generator
from reasoner.models.batching import Cancelled, current_token
from reasoner.models.config import ModelConfig
from reasoner.models.context import context_overflow
from reasoner.models.dtype import resolve_dtype
from reasoner.models.vllm_engine import (
    configure_cpu_environment,
    cuda_available,
    engine_processes,
    hide_broken_torchvision,
    to_completions,
)
from reasoner.types import Completion, GenerationRequest


def engine_kwargs(model_path: str, config: ModelConfig, on_cpu: bool) -> dict[str, Any]:
    """vLLM engine arguments, as reasoner's `vllm.LLM` backend sets them (the two engines must
    run the same model the same way)."""
    kwargs: dict[str, Any] = dict(
        model=model_path,
        dtype=resolve_dtype(config.dtype).dtype,
        max_model_len=config.max_model_len,
        seed=config.seed,
        enable_prefix_caching=config.enable_prefix_caching,
        enforce_eager=on_cpu if config.enforce_eager is None else config.enforce_eager,
        tensor_parallel_size=config.tensor_parallel_size,
        enable_lora=config.enable_lora or config.adapter is not None,
    )
    if kwargs["enable_lora"]:
        kwargs["max_lora_rank"] = config.max_lora_rank
    if on_cpu:
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(config.max_model_len, 2048)
    else:
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
    return kwargs


class AsyncVLLMGenerator(Generator):
    """See the module docstring. `config.adapter`, when set, applies to every request that
    names no adapter of its own."""

    #: safe to call from many threads at once; the server needs no batching layer in front
    concurrent_callers = True
    mode = "async-engine"

    def __init__(self, model_path: str, config: ModelConfig) -> None:
        self.config = config
        self.on_cpu = not cuda_available()
        self.description = f"vllm:{model_path}"
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if self.on_cpu:
            configure_cpu_environment(config)
        hide_broken_torchvision()
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
        except ImportError as exc:
            raise ModelError(f"the vLLM backend needs vLLM ({exc})") from None
        self._adapters: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="reasoner-async-engine", daemon=True
        )
        self._thread.start()
        args = AsyncEngineArgs(**engine_kwargs(model_path, config, self.on_cpu))
        try:
            self.engine = self._call(self._create(args))
        except BaseException:
            self._stop_loop()
            raise
        self.tokenizer = self.engine.tokenizer

    async def _create(self, args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        # inside the loop: its output handler starts here, and this thread starts its processes
        with engine_processes():
            return AsyncLLM.from_engine_args(args)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # -- request conversion ---------------------------------------------------------------
    def _prompt(self, request: GenerationRequest) -> Any:
        from vllm.inputs import TokensPrompt

        if request.messages is None:
            return request.prompt
        ids: Any = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in request.messages],
            add_generation_prompt=True,
            tokenize=True,
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return TokensPrompt(prompt_token_ids=list(ids))

    @staticmethod
    def _sampling(request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = request.sampling
        return SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            seed=s.seed,
            logprobs=s.logprobs,
            output_kind=RequestOutputKind.FINAL_ONLY,  # no partial outputs to detokenize
        )

    def _lora(self, adapter: str | None) -> Any:
        adapter = adapter or self.config.adapter
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self._adapters.setdefault(adapter, len(self._adapters) + 1)
        return LoRARequest(os.path.basename(adapter.rstrip("/")) or "adapter", lora_id, adapter)

    # -- generation -----------------------------------------------------------------------
    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        if not requests:
            return
        results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(self._run(list(requests), results), self._loop)
        token = current_token.get()
        unregister = None
        if token is not None:

            def cancel() -> None:
                future.cancel()
                results.put(Cancelled(token.reason))

            unregister = token.register(cancel)
        delivered = 0
        try:
            while delivered < len(requests):
                item = results.get()
                if isinstance(item, BaseException):
                    raise item
                delivered += 1
                yield item
        finally:
            if unregister is not None:
                unregister()
            if delivered < len(requests):
                future.cancel()  # AsyncLLM aborts the engine requests of cancelled tasks

    async def _run(
        self, requests: list[GenerationRequest], results: queue.SimpleQueue[Any]
    ) -> None:
        tasks = [
            asyncio.ensure_future(self._one(index, request, results))
            for index, request in enumerate(requests)
        ]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        except Exception as exc:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            results.put(exc)

    async def _one(
        self, index: int, request: GenerationRequest, results: queue.SimpleQueue[Any]
    ) -> None:
        final = None
        async for output in self.engine.generate(
            self._prompt(request),
            self._sampling(request),
            uuid.uuid4().hex,
            lora_request=self._lora(request.adapter),
        ):
            final = output
        if final is None:  # pragma: no cover - FINAL_ONLY always yields the finished output
            raise ModelError("the engine finished a request without output")
        results.put((index, to_completions(final)))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in requests]
        for index, completions in self.generate_stream(requests):
            results[index] = completions
        return results

    def prompt_overflow(self, request: GenerationRequest) -> str | None:
        return context_overflow(self.tokenizer, request, self.config.max_model_len)

    def in_flight(self) -> int:
        """Requests the engine has not finished (tests use it to see aborts take effect)."""
        return int(self.engine.output_processor.get_num_unfinished_requests())

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            self._call(self._shutdown(engine))
            self.engine = None
        self._stop_loop()

    async def _shutdown(self, engine: Any) -> None:
        engine.shutdown()

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=60)
        if not self._loop.is_running():
            self._loop.close()
