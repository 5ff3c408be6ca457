"""An OpenAI-compatible HTTP front (`/v1/chat/completions`, `/v1/models`) for any Generator.

Each request runs its strategy in a worker thread; all of them share one BatchingGenerator, so
many clients' requests (and every sample of a self-consistency request) decode in the same
engine batches. A request that outlives its timeout is answered 504 and its engine requests are
aborted, so a stuck client cannot hold the engine; so are those of a client that disconnects
before its answer is ready. With `ServeSettings.api_key`, /v1/* routes need
`Authorization: Bearer <key>`, as `vllm serve --api-key` does.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from reasoner.models.base import Generator
from reasoner.models.batching import BatchingGenerator, Cancelled, CancelToken, current_token
from reasoner.serving.protocol import ChatRequest, describe_validation
from reasoner.serving.service import (
    Answer,
    ChatService,
    Prepared,
    RequestError,
    ServeSettings,
    reasoner_body,
    response_body,
    usage_body,
)

logger = logging.getLogger(__name__)

#: characters per streamed content chunk (cut at word boundaries)
CHUNK_CHARS = 24
#: how often a waiting request checks whether its client is still connected
DISCONNECT_POLL_S = 0.25


def create_app(
    generator: Generator, settings: ServeSettings, owns_generator: bool = False
) -> FastAPI:
    """The app over `generator`; wrapped in a BatchingGenerator unless it already batches the
    calls of many threads itself. With `owns_generator` the engine is closed at shutdown."""
    concurrent = isinstance(generator, BatchingGenerator) or getattr(
        generator, "concurrent_callers", False
    )
    batching = (
        generator
        if concurrent
        else BatchingGenerator(generator, window_s=settings.batch_window_ms / 1000)
    )
    service = ChatService(batching, settings)
    executor = ThreadPoolExecutor(
        max_workers=settings.max_concurrent_requests, thread_name_prefix="reasoner-request"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            service.close()
            if batching is not generator:
                batching.close()
            if owns_generator:
                generator.close()

    app = FastAPI(title="reasoner", lifespan=lifespan)
    app.state.service = service
    app.state.batching = batching

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    # a route dependency rather than an HTTP middleware: Starlette's BaseHTTPMiddleware wraps
    # `receive`, which would hide a client's disconnect from the route
    authorized = [Depends(_api_key_check(settings.api_key))] if settings.api_key else []

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=authorized)
    async def models() -> dict[str, Any]:
        cards = [_model_card(name, batching) for name in service.model_names]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model:path}", dependencies=authorized)
    async def model(model: str) -> dict[str, Any]:
        if model not in service.model_names:
            raise RequestError(
                f"model {model!r} is not served here", "model", 404, code="model_not_found"
            )
        return _model_card(model, batching)

    @app.post("/v1/chat/completions", dependencies=authorized)
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        try:
            chat = ChatRequest.model_validate(body)
        except ValidationError as exc:
            param, message = describe_validation(exc)
            raise RequestError(message, param) from None
        prepared = service.prepare(chat)
        answer = await _run(prepared, request)
        if chat.stream:
            include_usage = chat.stream_options is not None and chat.stream_options.include_usage
            return StreamingResponse(
                _sse(_chunks(prepared, answer, chat.model, include_usage)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return JSONResponse(response_body(prepared, answer, chat.model))

    async def _run(prepared: Prepared, request: Request) -> Answer:
        token = CancelToken()
        context = contextvars.copy_context()
        context.run(current_token.set, token)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, context.run, service.run, prepared)
        watcher = asyncio.create_task(cancel_on_disconnect(request, token))
        try:
            return await asyncio.wait_for(future, prepared.timeout_s)
        except TimeoutError:
            token.cancel(f"request timed out after {prepared.timeout_s:g} s")
            raise RequestError(
                f"the request did not finish within {prepared.timeout_s:g} s (`timeout`)",
                "timeout",
                504,
                "timeout_error",
                "timeout",
            ) from None
        except RequestError:
            raise
        except Cancelled as exc:  # the client went away; nobody reads this answer
            raise RequestError(f"cancelled: {exc}", None, 499, "cancelled") from None
        except (ValueError, TypeError) as exc:  # the engine refused the request's input
            raise RequestError(f"the engine refused the request: {exc}") from None
        except Exception as exc:
            logger.exception("request %s failed", prepared.id)
            raise RequestError(f"generation failed: {exc}", None, 500, "server_error") from None
        finally:
            watcher.cancel()

    return app


def _api_key_check(api_key: str) -> Callable[[Request], Awaitable[None]]:
    """`Authorization: Bearer <api_key>` or 401, compared in constant time."""
    expected = f"Bearer {api_key}".encode()

    async def check(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            raise RequestError(
                "a valid API key is needed: `Authorization: Bearer <key>`",
                None,
                401,
                code="invalid_api_key",
            )

    return check


async def cancel_on_disconnect(
    request: Request, token: CancelToken, poll_s: float = DISCONNECT_POLL_S
) -> None:
    """Fire `token` once the client has disconnected: its engine requests are then aborted
    instead of decoding (an n=64 request for minutes) for an answer nobody will read."""
    while not token.cancelled:
        if await request.is_disconnected():
            token.cancel("the client disconnected")
            return
        await asyncio.sleep(poll_s)


def _model_card(name: str, generator: Generator) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "reasoner",
        "root": generator.description,
    }


def split_for_stream(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Pieces of about `size` characters, cut only where whitespace meets a word; joined they
    give back `text` exactly."""
    words = re.split(r"(?<=\s)(?=\S)", text)
    pieces: list[str] = []
    current = ""
    for word in words:
        if current and len(current) + len(word) > size:
            pieces.append(current)
            current = ""
        current += word
    if current:
        pieces.append(current)
    return pieces


def _chunks(
    prepared: Prepared, answer: Answer, model: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """`chat.completion.chunk` objects: the role, the answer in pieces, the finish reason, and
    (when asked with stream_options.include_usage) a last chunk with usage and no choices."""
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": prepared.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    def delta(content: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

    yield chunk(delta({"role": "assistant", "content": ""}))
    for piece in split_for_stream(answer.text):
        yield chunk(delta({"content": piece}))
    yield chunk(delta({}, answer.finish_reason), reasoner=reasoner_body(prepared, answer.trace))
    if include_usage:
        yield chunk([], usage=usage_body(answer.trace))


async def _sse(chunks: Iterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    for item in chunks:
        yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode()
    yield b"data: [DONE]\n\n"
