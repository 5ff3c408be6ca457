"""Scale-out on Ray: engine replicas as actors, verifiers as tasks (`reasoner eval --ray`)."""

from __future__ import annotations

from reasoner.scale.settings import RaySettings

__all__ = ["RaySettings"]
