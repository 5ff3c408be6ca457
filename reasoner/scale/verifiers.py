"""Verifiers as Ray tasks, so CPU-heavy checks (provers, sandboxed code, sympy) use the whole
cluster while the engine replicas generate.

A task carries the verifier's name and constructor arguments rather than the verifier: each
Ray worker builds it once and keeps it (with its worker processes) for later tasks. Answer
equivalence for voting stays in the driver: it compares short answers and is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasoner.scale.cluster import import_ray
from reasoner.scale.settings import RaySettings
from reasoner.types import Completion, Problem, Verdict
from reasoner.verifiers.base import Verifier

_WORKER_VERIFIERS: dict[tuple[str, tuple[tuple[str, Any], ...]], Verifier] = {}


def verify_chunk(
    name: str, options: tuple[tuple[str, Any], ...], pairs: list[tuple[Problem, Completion]]
) -> list[Verdict]:
    """Runs in a Ray worker: the worker's own verifier, built on its first task."""
    from reasoner.verifiers import load

    key = (name, options)
    if key not in _WORKER_VERIFIERS:
        _WORKER_VERIFIERS[key] = load(name, **dict(options))
    return _WORKER_VERIFIERS[key].verify_batch(pairs)


class RayVerifier(Verifier):
    """`local`'s checks, run as Ray tasks of `chunk` completions each."""

    name = "ray"

    def __init__(
        self, local: Verifier, name: str, options: dict[str, Any], settings: RaySettings
    ) -> None:
        self.local = local
        self.verifier_name = name
        self.options = tuple(sorted(options.items()))
        self.settings = settings
        self.max_concurrency = local.max_concurrency
        self.reads_gold = local.reads_gold
        self.timeout_s = local.timeout_s
        self._remote: Any = None
        #: Ray tasks submitted so far
        self.tasks = 0

    def unwrapped(self) -> Verifier:
        return self.local.unwrapped()

    def extract_answer(self, text: str) -> str | None:
        return self.local.extract_answer(text)

    def _task(self) -> Any:
        if self._remote is None:
            ray = import_ray()
            self._remote = ray.remote(verify_chunk).options(num_cpus=self.settings.verifier_cpus)
        return self._remote

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        return self.verify_batch([(problem, completion)])[0]

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        if not pairs:
            return []
        ray = import_ray()
        task = self._task()
        size = self.settings.verifier_chunk
        refs = [
            task.remote(self.verifier_name, self.options, list(pairs[start : start + size]))
            for start in range(0, len(pairs), size)
        ]
        self.tasks += len(refs)
        return [verdict for chunk in ray.get(refs) for verdict in chunk]

    def equivalent(self, problem: Problem, a: str, b: str) -> bool:
        return self.local.equivalent(problem, a, b)

    def close(self) -> None:
        self.local.close()


def ray_verifier(local: Verifier, settings: RaySettings) -> Verifier:
    """`local` itself where it must stay in the driver (it holds a generator, or is named in
    ray.local_verifiers), else Ray tasks that build the same verifier by name, with its timeout."""
    if local.needs_generator or local.name in settings.local_verifiers:
        return local
    return RayVerifier(local, local.name, {"timeout_s": local.timeout_s}, settings)
