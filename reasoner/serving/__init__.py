"""`reasoner serve`: an OpenAI-compatible server whose requests pick an inference strategy."""

from __future__ import annotations

from reasoner.models.batching import BatchingGenerator, CancelToken, cancel_scope
from reasoner.serving.service import ServeSettings

__all__ = ["BatchingGenerator", "CancelToken", "ServeSettings", "cancel_scope", "create_app"]


def create_app(*args: object, **kwargs: object) -> object:
    """The FastAPI app (imported lazily: fastapi is the `serve` extra)."""
    from reasoner.serving.app import create_app as _create_app

    return _create_app(*args, **kwargs)  # type: ignore[arg-type]
