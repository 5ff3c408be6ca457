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
from reasoner.models.batching import Cancelled, current_token, drain_results
from reasoner.models.config import ModelConfig
from reasoner.models.context import context_overflow
from reasoner.models.dtype import resolve_dtype
from reasoner.models.vllm_engine import (
    LoraRequests,
    configure_cpu_environment,
    cuda_available,
    engine_kwargs,
    engine_processes,
    hide_broken_torchvision,
    prompt_input,
    sampling_params,
    to_completions,
)
from reasoner.types import Completion, GenerationRequest


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
        self._lora = LoraRequests(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="reasoner-async-engine", daemon=True
        )
        self._thread.start()
        dtype = resolve_dtype(config.dtype).dtype
        args = AsyncEngineArgs(**engine_kwargs(model_path, config, self.on_cpu, dtype))
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
        # AsyncLLM aborts the engine requests of a cancelled task
        yield from drain_results(results, len(requests), unregister, future.cancel)

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
        from vllm.sampling_params import RequestOutputKind

        final = None
        async for output in self.engine.generate(
            prompt_input(self.tokenizer, request),
            sampling_params(request, output_kind=RequestOutputKind.FINAL_ONLY),  # no partials
            uuid.uuid4().hex,
            lora_request=self._lora(request.adapter or self.config.adapter),
        ):
            final = output
        if final is None:  # pragma: no cover - FINAL_ONLY always yields the finished output
            raise ModelError("the engine finished a request without output")
        results.put((index, to_completions(final)))

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
