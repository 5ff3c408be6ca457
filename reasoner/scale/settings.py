"""The `ray` section of an eval config. Kept free of Ray imports so configs validate without it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RaySettings(BaseModel):
    """Where the Ray cluster is and how much of it a run takes.

    `address`: `local` starts a private single-node cluster in this process (bound to
    127.0.0.1), `auto` joins the cluster started with `ray start` on this machine, and
    `HOST:PORT` or `ray://HOST:10001` join a remote one.
    """

    model_config = ConfigDict(extra="forbid")
    #: `local` (a private cluster), `auto` (the cluster on this machine) or HOST:PORT /
    #: ray://HOST:10001
    address: str = "auto"
    #: vLLM engine replicas, one Ray actor each; each may itself be tensor-parallel
    replicas: int = Field(2, ge=1)
    #: CPUs a replica reserves (on a CPU-only node the engine's threads are bound to that many
    #: of the node's cores)
    cpus_per_replica: float = Field(1.0, gt=0)
    #: GPUs a replica reserves; None: model.tensor_parallel_size where CUDA is available, else 0
    gpus_per_replica: float | None = Field(None, ge=0)
    #: CPUs each verifier task reserves (0 lets checks share the replicas' CPUs)
    verifier_cpus: float = Field(1.0, ge=0)
    #: completions per verifier task
    verifier_chunk: int = Field(8, ge=1)
    #: verifiers checked in the driver process instead; one that needs a generator (the judge
    #: holds the run's engine) always is
    local_verifiers: list[str] = []
    #: `local` only: logical CPUs of the private cluster (None: this machine's count)
    num_cpus: int | None = Field(None, ge=1)
    #: `local` only: the object store's size in MiB
    object_store_mb: int = Field(256, ge=64)
