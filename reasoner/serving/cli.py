"""`reasoner serve`: load a model once and answer OpenAI chat requests with any strategy."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reasoner.config import build_config, config_file, load_yaml
from reasoner.errors import ConfigError, unknown_choice
from reasoner.models.config import ModelConfig

#: environment variables an API key is read from when --api-key is not given, in this order
API_KEY_ENV = ("REASONER_API_KEY", "VLLM_API_KEY")


class ServeConfig(BaseModel):
    """The model to load and how to serve it; flags, `--config` YAML and `--set` feed it."""

    model_config = ConfigDict(extra="forbid")
    #: the model and the backend that serves it
    model: ModelConfig = ModelConfig()
    #: the address to bind (non-loopback without an api_key warns)
    host: str = "127.0.0.1"
    #: the port to listen on
    port: int = Field(8000, ge=0, le=65535)
    served_model_name: str | None = None  # default: model.name
    #: the strategy of a request that names none
    default_strategy: str = "greedy"
    #: the verifier of a request that names none
    default_verifier: str = "math"
    #: max_tokens of a request that sets none
    default_max_tokens: int = Field(512, ge=1)
    #: the largest n a request may ask for (400 above it)
    max_n: int = Field(64, ge=1)
    #: seconds a request may run before it is cancelled
    request_timeout_s: float = Field(600.0, gt=0)
    #: requests served at once; more wait
    max_concurrent_requests: int = Field(256, ge=1)
    #: seconds a verifier may take per check
    verifier_timeout_s: float = Field(10.0, gt=0)
    #: how long concurrent requests are gathered into one engine batch
    batch_window_ms: float = Field(5.0, ge=0)
    #: uvicorn's log level
    log_level: str = "warning"
    api_key: str | None = None  # default: $REASONER_API_KEY, else $VLLM_API_KEY


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible server: any strategy behind /v1/chat/completions",
        description="Flags override --config; --set overrides both. Requests pick a strategy "
        'with extra fields, e.g. {"strategy": "self-consistency", "n": 8, "verifier": "math"}.',
    )
    p.add_argument("--config", help="a YAML ServeConfig")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. model.tensor_parallel_size=2 (repeatable)",
    )
    p.add_argument("--model", help="embedded alias, local folder, .gguf file or hub id")
    p.add_argument("--backend", choices=["auto", "vllm", "transformers", "openai"])
    p.add_argument("--base-url", help="put strategies in front of another OpenAI server")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--served-model-name", help="the name clients send as `model`")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--dtype")
    p.add_argument("--tensor-parallel-size", type=int)
    p.add_argument("--request-timeout", type=float, help="seconds per request (default 600)")
    p.add_argument("--max-tokens", type=int, help="default max_tokens of a request (512)")
    p.add_argument(
        "--api-key",
        help="clients must send `Authorization: Bearer KEY` on /v1/* "
        f"(default: ${' or $'.join(API_KEY_ENV)}; none: no check)",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    pairs: list[tuple[str, Any]] = [
        ("model.name", args.model),
        ("model.backend", args.backend),
        ("model.base_url", args.base_url),
        ("model.max_model_len", args.max_model_len),
        ("model.dtype", args.dtype),
        ("model.tensor_parallel_size", args.tensor_parallel_size),
        ("host", args.host),
        ("port", args.port),
        ("served_model_name", args.served_model_name),
        ("request_timeout_s", args.request_timeout),
        ("default_max_tokens", args.max_tokens),
        ("api_key", args.api_key),
    ]
    return [f"{key}={json.dumps(value)}" for key, value in pairs if value is not None]


def serve_config(args: argparse.Namespace) -> ServeConfig:
    path = config_file(args.config) if args.config else None
    base = load_yaml(path) if path else {}
    source = str(path) if path else "command line"
    config = build_config(ServeConfig, base, _overrides(args) + args.set, source=source)
    if config.api_key is None:
        from_env = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        config = config.model_copy(update={"api_key": from_env})
    return config


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost counts as not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(config: ServeConfig) -> str | None:
    """A warning for a server that anyone on the network may use: bound beyond loopback
    without an API key."""
    if config.api_key is not None or is_loopback(config.host):
        return None
    return (
        f"reasoner serve: warning: listening on {config.host} without an API key: anyone who "
        "can reach this port can use the model; pass --api-key (or set REASONER_API_KEY)"
    )


def settings_for(config: ServeConfig) -> Any:
    from reasoner.serving.service import ServeSettings

    name = config.served_model_name or config.model.name
    aliases = [config.model.name] if config.model.name != name else []
    return ServeSettings(
        served_model_name=name,
        aliases=aliases,
        default_strategy=config.default_strategy,
        default_verifier=config.default_verifier,
        default_max_tokens=config.default_max_tokens,
        max_n=config.max_n,
        request_timeout_s=config.request_timeout_s,
        max_concurrent_requests=config.max_concurrent_requests,
        verifier_timeout_s=config.verifier_timeout_s,
        batch_window_ms=config.batch_window_ms,
        api_key=config.api_key,
    )


def run(args: argparse.Namespace) -> int:
    config = serve_config(args)
    from reasoner.strategies import STRATEGIES
    from reasoner.verifiers import VERIFIERS

    if config.default_strategy not in STRATEGIES:
        raise ConfigError(unknown_choice("default_strategy", config.default_strategy, STRATEGIES))
    if config.default_verifier not in VERIFIERS:
        raise ConfigError(unknown_choice("default_verifier", config.default_verifier, VERIFIERS))

    import uvicorn

    from reasoner.serving.app import create_app

    warning = exposure_warning(config)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    generator = load_serving_generator(config.model)
    app = create_app(generator, settings_for(config), owns_generator=True)
    name = config.served_model_name or config.model.name
    print(f"reasoner serve: {name} at http://{config.host}:{config.port}/v1", flush=True)
    # uvicorn shuts down gracefully on SIGTERM (closing the engine), then re-raises the signal
    # through the handler it found; this one turns that into a clean exit.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.run(
            app, host=config.host, port=config.port, log_level=config.log_level, access_log=False
        )
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print("reasoner serve: stopped", flush=True)
    return 0


def load_serving_generator(model: ModelConfig) -> Any:
    """vLLM as AsyncLLM (the engine `vllm serve` runs: requests join the next engine step as
    they arrive); any other backend as `reasoner eval` loads it, batched by the server."""
    from reasoner.models import load_generator, resolve_backend
    from reasoner.models.resolve import resolve_model

    if resolve_backend(model) == "vllm":
        from reasoner.serving.async_vllm import AsyncVLLMGenerator

        return AsyncVLLMGenerator(resolve_model(model.name).path, model)
    generator, _ = load_generator(model)
    if model.adapter is not None:  # every request through the trained adapter
        from reasoner.models.adapter import AdapterGenerator

        generator = AdapterGenerator(generator, model.adapter)
    return generator


def _stopped(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """`python -m reasoner.serving ...`: the same command without the `reasoner` CLI around it."""
    from reasoner.errors import ReasonerError

    parser = argparse.ArgumentParser(prog="python -m reasoner.serving")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except ReasonerError as exc:
        print(f"reasoner serve: error: {exc}", file=sys.stderr)
        return 2
