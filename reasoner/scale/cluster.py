"""Joining (or starting) the Ray cluster a run scales out on."""

from __future__ import annotations

import os
from typing import Any

from reasoner.errors import ConfigError
from reasoner.scale.settings import RaySettings


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "ray.address is set but Ray is not installed: pip install 'reasoner[ray]'"
        ) from None
    return ray


def connect(settings: RaySettings) -> bool:
    """Join the cluster `settings.address` names; True when this call started Ray here (so
    the caller shuts it down when done)."""
    if settings.address == "local":
        # Read when Ray is imported: a private cluster then binds 127.0.0.1, not the LAN address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if ray.is_initialized():
        return False
    if settings.address == "local":
        ray.init(
            address="local",
            num_cpus=settings.num_cpus,
            object_store_memory=settings.object_store_mb * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
        )
    else:
        try:
            ray.init(address=settings.address, log_to_driver=False)
        except ConnectionError as exc:
            raise ConfigError(
                f"ray.address {settings.address!r}: no Ray cluster answered ({exc}); start one "
                "with `ray start --head`, or use --ray local for a private one"
            ) from None
    return True


def check_resources(settings: RaySettings, gpus_per_replica: float) -> None:
    """Refuse, before any engine starts, a pool the cluster cannot hold: Ray would otherwise
    wait forever for resources that never come."""
    ray = import_ray()
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    needed_cpus = settings.replicas * settings.cpus_per_replica
    if needed_cpus > cpus:
        raise ConfigError(
            f"ray.replicas={settings.replicas} x ray.cpus_per_replica={settings.cpus_per_replica:g}"
            f" needs {needed_cpus:g} CPUs; the cluster has {cpus:g}"
        )
    if settings.verifier_cpus > 0 and needed_cpus + settings.verifier_cpus > cpus:
        raise ConfigError(
            f"no CPU left for verifier tasks: the replicas take {needed_cpus:g} of the cluster's "
            f"{cpus:g} CPUs and ray.verifier_cpus={settings.verifier_cpus:g}; lower "
            "ray.cpus_per_replica or set ray.verifier_cpus=0"
        )
    if settings.replicas * gpus_per_replica > gpus:
        raise ConfigError(
            f"ray.replicas={settings.replicas} x {gpus_per_replica:g} GPUs per replica needs "
            f"{settings.replicas * gpus_per_replica:g} GPUs; the cluster has {gpus:g}"
        )
