"""One engine, many callers: a Generator wrapper that funnels the calls of many threads into
shared engine batches.

Strategies are synchronous and call `generate_stream` from their own thread, so a server that
runs one strategy per HTTP request would otherwise hand the engine one small batch at a time.
Here every call is put on an inbox that a single engine thread drains:

- in front of the in-process vLLM engine the thread enqueues new requests between engine steps
  (continuous batching, as `vllm serve` does): a request that arrives mid-decode joins the
  running batch at the next step instead of waiting for it to finish;
- in front of any other Generator the thread takes every call that arrived within a short
  window and makes one `generate_stream` call of all their requests (micro-batching).

A call made while a `CancelToken` is current (see `cancel_scope`) is aborted in the engine when
the token fires, which is how the server's per-request timeout frees the engine.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reasoner.errors import ReasonerError
from reasoner.models.base import Generator
from reasoner.types import Completion, GenerationRequest

if TYPE_CHECKING:
    from reasoner.models.adapter import AdapterGenerator
    from reasoner.models.vllm_engine import VLLMGenerator

logger = logging.getLogger(__name__)


class Cancelled(ReasonerError):
    """The call's CancelToken fired (the server's per-request timeout)."""


class CancelToken:
    """Fired once; callbacks registered before or after firing run exactly once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.cancelled = False
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
            self.reason = reason
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def register(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` when the token fires (at once if it has); returns an unregister."""
        with self._lock:
            if not self.cancelled:
                self._callbacks.append(callback)

                def unregister() -> None:
                    with self._lock, contextlib.suppress(ValueError):
                        self._callbacks.remove(callback)

                return unregister
        callback()
        return lambda: None


current_token: ContextVar[CancelToken | None] = ContextVar("reasoner_cancel_token", default=None)


@contextlib.contextmanager
def cancel_scope(token: CancelToken) -> Iterator[CancelToken]:
    """Generator calls made inside the scope (in this thread or context) obey `token`."""
    reset = current_token.set(token)
    try:
        yield token
    finally:
        current_token.reset(reset)


def drain_results(
    results: queue.SimpleQueue[Any],
    count: int,
    unregister: Callable[[], None] | None,
    stopped_early: Callable[[], object],
) -> Iterator[tuple[int, list[Completion]]]:
    """The `count` results an engine thread puts on `results`, as they arrive; an exception put
    there is raised. Afterwards `unregister` drops the cancel hook, and `stopped_early` runs if
    the consumer stopped (or an error came) before the last result, to free the engine."""
    delivered = 0
    try:
        while delivered < count:
            item = results.get()
            if isinstance(item, BaseException):
                raise item
            delivered += 1
            yield item
    finally:
        if unregister is not None:
            unregister()
        if delivered < count:
            stopped_early()


@dataclass(eq=False)
class _Call:
    """One caller's `generate_stream`: its requests and the queue its results arrive on."""

    requests: list[GenerationRequest]
    results: queue.SimpleQueue[tuple[int, list[Completion]] | BaseException] = field(
        default_factory=queue.SimpleQueue
    )
    #: engine request ids still running: external id -> (request index, internal id)
    running: dict[str, tuple[int, str]] = field(default_factory=dict)
    cancelled: bool = False


@dataclass
class BatchStats:
    """What the engine thread did; tests use it to show that concurrent calls shared batches."""

    calls: int = 0  # generate_stream calls made by callers
    requests: int = 0  # requests in those calls
    engine_batches: int = 0  # inner generate_stream calls (micro-batching) or enqueues (vLLM)
    peak_in_flight: int = 0  # most requests decoding together in the engine
    aborted: int = 0  # requests aborted in the engine after a cancel


_STOP = object()


class BatchingGenerator(Generator):
    """Thread-safe front of one Generator; see the module docstring. `window_s` is how long
    micro-batching waits for more calls after the first; continuous batching needs no wait."""

    def __init__(self, inner: Generator, window_s: float = 0.005, owns_inner: bool = False) -> None:
        self.inner = inner
        self.description = inner.description
        self.window_s = window_s
        self.owns_inner = owns_inner
        self.stats = BatchStats()
        self._stats_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._broken: BaseException | None = None
        self._closed = False
        self._stepper = VLLMStepper.wrap(inner)
        target = self._continuous_loop if self._stepper is not None else self._micro_batch_loop
        self.mode = "continuous" if self._stepper is not None else "micro-batch"
        self._thread = threading.Thread(target=target, name="reasoner-engine", daemon=True)
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------------
    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        if not requests:
            return
        if self._broken is not None:
            raise ReasonerError(f"the engine failed earlier: {self._broken}") from self._broken
        if self._closed:
            raise ReasonerError("the generator is closed")
        call = _Call(list(requests))
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.requests += len(call.requests)
        token = current_token.get()
        self._inbox.put(call)
        unregister = token.register(lambda: self._cancel(call, token)) if token else None

        def abort_rest() -> None:  # the consumer stopped early: free the engine of what is left
            if not call.cancelled:
                call.cancelled = True
                self._inbox.put(("abort", call))

        yield from drain_results(call.results, len(call.requests), unregister, abort_rest)

    def prompt_overflow(self, request: GenerationRequest) -> str | None:
        return self.inner.prompt_overflow(request)

    def _cancel(self, call: _Call, token: CancelToken) -> None:
        call.cancelled = True
        call.results.put(Cancelled(token.reason))
        self._inbox.put(("abort", call))

    def close(self) -> None:
        self._closed = True
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join(timeout=60)
        if self.owns_inner:
            self.inner.close()

    # -- the engine thread: continuous batching on vLLM ------------------------------------
    def _continuous_loop(self) -> None:
        stepper = self._stepper
        assert stepper is not None
        running: dict[str, tuple[_Call, int, str]] = {}
        while True:
            # idle: sleep until a call arrives; decoding: take what arrived since the last step
            items = [] if running else [self._inbox.get()]
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if any(i is _STOP for i in items):
                stepper.abort([rid for _, _, rid in running.values()])
                closing = ReasonerError("the generator is closed")
                self._fail_all(running, closing)
                for waiting in items:
                    if isinstance(waiting, _Call):
                        waiting.results.put(closing)
                return
            for entry in items:
                if isinstance(entry, tuple):  # ("abort", call)
                    self._abort(entry[1], running, stepper)
                else:
                    self._submit(entry, running, stepper)
            if not running:
                continue
            try:
                finished = stepper.step()
            except Exception as exc:  # the engine died: every caller hears of it
                logger.exception("engine step failed")
                self._broken = exc
                self._fail_all(running, exc)
                return
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, stepper.in_flight())
            for external_id, completions in finished:
                entry_ = running.pop(external_id, None)
                if entry_ is None:
                    continue
                call, index, _ = entry_
                call.running.pop(external_id, None)
                if not call.cancelled:
                    call.results.put((index, completions))

    def _submit(
        self, call: _Call, running: dict[str, tuple[_Call, int, str]], stepper: VLLMStepper
    ) -> None:
        if call.cancelled:
            return
        try:
            ids = stepper.enqueue(call.requests)
        except Exception as exc:  # a request the engine refuses (too long, bad adapter)
            call.results.put(exc)
            return
        self.stats.engine_batches += 1
        for index, (external, internal) in enumerate(ids):
            running[external] = (call, index, internal)
            call.running[external] = (index, internal)

    def _abort(
        self, call: _Call, running: dict[str, tuple[_Call, int, str]], stepper: VLLMStepper
    ) -> None:
        internal = [rid for _, rid in call.running.values()]
        for external in list(call.running):
            running.pop(external, None)
        call.running.clear()
        if internal:
            self.stats.aborted += len(internal)
            stepper.abort(internal)

    @staticmethod
    def _fail_all(running: dict[str, tuple[_Call, int, str]], exc: BaseException) -> None:
        calls = {id(call): call for call, _, _ in running.values()}
        for call in calls.values():
            call.results.put(exc)
        running.clear()

    # -- the engine thread: micro-batching over any Generator ------------------------------
    def _micro_batch_loop(self) -> None:
        while True:
            first = self._inbox.get()
            if first is _STOP:
                return
            if self.window_s > 0:
                time.sleep(self.window_s)
            items = [first]
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            stop = any(i is _STOP for i in items)
            calls = [i for i in items if isinstance(i, _Call)]
            live = [c for c in calls if not c.cancelled]
            if stop:
                for call in live:
                    call.results.put(ReasonerError("the generator is closed"))
                return
            if live:
                self._run_batch(live)

    def _run_batch(self, calls: list[_Call]) -> None:
        flat: list[GenerationRequest] = []
        owner: list[tuple[_Call, int]] = []
        for call in calls:
            for index, request in enumerate(call.requests):
                flat.append(request)
                owner.append((call, index))
        self.stats.engine_batches += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, len(flat))
        try:
            for position, completions in self.inner.generate_stream(flat):
                call, index = owner[position]
                if not call.cancelled:
                    call.results.put((index, completions))
        except Exception as exc:
            for call in calls:
                call.results.put(exc)


class VLLMStepper:
    """The in-process vLLM engine as enqueue / step / abort, for continuous batching. It reuses
    VLLMGenerator's request conversion so both paths send the engine the same requests; an
    AdapterGenerator around the engine still puts its adapter on every request."""

    def __init__(self, generator: VLLMGenerator, adapter: AdapterGenerator | None = None) -> None:
        self.generator = generator
        self.adapter = adapter
        self.engine = generator.llm.llm_engine

    @classmethod
    def wrap(cls, inner: Generator) -> VLLMStepper | None:
        from reasoner.models.adapter import AdapterGenerator
        from reasoner.models.vllm_engine import VLLMGenerator

        if isinstance(inner, AdapterGenerator) and isinstance(inner.inner, VLLMGenerator):
            return cls(inner.inner, adapter=inner)
        return cls(inner) if isinstance(inner, VLLMGenerator) else None

    def enqueue(self, requests: Sequence[GenerationRequest]) -> list[tuple[str, str]]:
        """(external id, internal id) per request; outputs carry the external one."""
        if self.adapter is not None:
            requests = self.adapter.with_adapter(requests)
        g = self.generator
        internal = g.llm.enqueue(
            [g.prompt_input(r) for r in requests],
            [g.sampling_params(r) for r in requests],
            lora_request=[g.lora_request(r.adapter) for r in requests],
            use_tqdm=False,
        )
        return [(rid.rsplit("-", 1)[0], rid) for rid in internal]

    def step(self) -> list[tuple[str, list[Completion]]]:
        from vllm import RequestOutput

        from reasoner.models.vllm_engine import to_completions

        return [
            (output.request_id, to_completions(output))
            for output in self.engine.step()
            if output.finished and isinstance(output, RequestOutput)
        ]

    def in_flight(self) -> int:
        return int(self.engine.get_num_unfinished_requests())

    def abort(self, internal_ids: list[str]) -> None:
        if internal_ids:
            self.engine.abort_request(internal_ids, internal=True)
