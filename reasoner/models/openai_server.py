"""Any OpenAI-compatible server (`vllm serve`, SGLang, TGI, hosted APIs) over HTTP.

A batch becomes concurrent HTTP requests under a semaphore, so the server's own scheduler sees
a full batch; transient failures (connection errors, 429, 5xx) are retried with backoff.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from reasoner.errors import ModelError
from reasoner.models.base import Generator, chat_prompt_text
from reasoner.models.config import ModelConfig
from reasoner.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    TokenLogprob,
    as_finish_reason,
)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIServerGenerator(Generator):
    def __init__(self, config: ModelConfig) -> None:
        if not config.base_url:
            raise ModelError(
                "the openai backend needs model.base_url, e.g. http://127.0.0.1:8000/v1"
            )
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.model = config.served_model_name or config.name
        self.description = f"openai:{self.base_url}:{self.model}"
        key = os.environ.get(config.api_key_env, "EMPTY")
        self.headers = {"Authorization": f"Bearer {key}"}
        self._chat_tokenizer: Any = None

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """With the served model's tokenizer loaded here from `model.name` (an embedded alias,
        a local folder or a hub id): the server's own template is out of reach over HTTP."""
        if self._chat_tokenizer is None:
            try:
                from transformers import AutoTokenizer

                from reasoner.models.embedded import EMBEDDED_MODELS
                from reasoner.models.resolve import resolve_model

                name = self.config.name
                local = name in EMBEDDED_MODELS or os.path.exists(os.path.expanduser(name))
                source = resolve_model(name).path if local else name
                self._chat_tokenizer = AutoTokenizer.from_pretrained(source)
            except Exception as exc:
                raise ModelError(
                    f"rendering the chat template for a raw-prompt request needs the served "
                    f"model's tokenizer; model.name {self.config.name!r} gave none ({exc})"
                ) from None
        # a server tokenizes /completions prompts with special tokens
        return chat_prompt_text(self._chat_tokenizer, messages, adds_special=True)

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        s = request.sampling
        body: dict[str, Any] = {
            "model": request.adapter or self.model,
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            if s.logprobs is not None:
                body["logprobs"] = True
                body["top_logprobs"] = s.logprobs
            return "/chat/completions", body
        body["prompt"] = request.prompt
        if s.logprobs is not None:
            body["logprobs"] = s.logprobs
        return "/completions", body

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        delay = 0.5
        for attempt in range(self.config.max_retries + 1):
            try:
                response = await client.post(self.base_url + path, json=body, headers=self.headers)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                error: str = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return response.json()
                error = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUS:
                    raise ModelError(f"{self.base_url}{path} refused the request: {error}")
            if attempt == self.config.max_retries:
                break
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 30.0)
        raise ModelError(
            f"{self.base_url}{path} failed after {self.config.max_retries + 1} attempts: {error}"
        )

    @staticmethod
    def _parse(data: dict[str, Any], chat: bool) -> list[Completion]:
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        total_out = int(usage.get("completion_tokens", 0))
        completions = []
        for choice in choices:
            text = (choice["message"]["content"] or "") if chat else choice["text"]
            logprobs = _chat_logprobs(choice) if chat else _completion_logprobs(choice)
            tokens = len(logprobs) if logprobs is not None else None
            completions.append(
                Completion(
                    text=text,
                    finish_reason=as_finish_reason(choice.get("finish_reason")),
                    prompt_tokens=prompt_tokens,
                    # servers report usage per request, not per choice: split it evenly
                    completion_tokens=tokens if tokens is not None else total_out // len(choices),
                    logprobs=logprobs,
                    cached_prompt_tokens=cached,
                )
            )
        return completions

    async def _one(
        self,
        client: httpx.AsyncClient,
        limit: asyncio.Semaphore,
        index: int,
        request: GenerationRequest,
    ) -> tuple[int, list[Completion]]:
        path, body = self._body(request)
        async with limit:
            data = await self._post(client, path, body)
        return index, self._parse(data, chat=path == "/chat/completions")

    def generate_stream(
        self, requests: Sequence[GenerationRequest]
    ) -> Iterator[tuple[int, list[Completion]]]:
        if not requests:
            return
        results: asyncio.Queue[tuple[int, list[Completion]] | BaseException]
        loop = asyncio.new_event_loop()
        runner: asyncio.Task[None] | None = None
        try:
            results = asyncio.Queue()

            async def run_all() -> None:
                limit = asyncio.Semaphore(self.config.max_concurrency)
                timeout = httpx.Timeout(self.config.request_timeout_s, connect=30.0)
                async with httpx.AsyncClient(timeout=timeout) as client:
                    tasks = [
                        asyncio.ensure_future(self._one(client, limit, i, r))
                        for i, r in enumerate(requests)
                    ]
                    try:
                        for done in asyncio.as_completed(tasks):
                            try:
                                await results.put(await done)
                            except BaseException as exc:  # surfaced to the consumer below
                                await results.put(exc)
                                raise
                    finally:
                        for task in tasks:
                            task.cancel()
                        # every task's outcome retrieved: no "Task exception was never retrieved"
                        await asyncio.gather(*tasks, return_exceptions=True)

            runner = loop.create_task(run_all())
            for _ in requests:
                item = loop.run_until_complete(results.get())
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if runner is not None:
                runner.cancel()
                loop.run_until_complete(asyncio.gather(runner, return_exceptions=True))
            loop.close()


def _chat_logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if content is None:
        return None
    return tuple(TokenLogprob(token=t["token"], logprob=float(t["logprob"])) for t in content)


def _completion_logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    logprobs = choice.get("logprobs")
    if not logprobs or logprobs.get("tokens") is None:
        return None
    return tuple(
        TokenLogprob(token=t, logprob=float(lp))
        for t, lp in zip(logprobs["tokens"], logprobs["token_logprobs"], strict=False)
    )
