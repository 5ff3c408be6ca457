"""`reasoner serve`: load a model once and answer OpenAI chat requests with any strategy."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from typing import Any

from pydantic import Field

from reasoner.config import (
    add_config_options,
    add_model_options,
    flag_overrides,
    load_config,
    model_flags,
)
from reasoner.errors import ConfigError, unknown_choice
from reasoner.models.config import ModelConfig
from reasoner.serving.service import ServeLimits, ServeSettings

#: environment variables an API key is read from when --api-key is not given, in this order
API_KEY_ENV = ("REASONER_API_KEY", "VLLM_API_KEY")


class ServeConfig(ServeLimits):
    """The model to load and how to serve it; flags, `--config` YAML and `--set` feed it."""

    #: the model and the backend that serves it
    model: ModelConfig = ModelConfig()
    #: the address to bind (non-loopback without an api_key warns)
    host: str = "127.0.0.1"
    #: the port to listen on
    port: int = Field(8000, ge=0, le=65535)
    served_model_name: str | None = None  # default: model.name
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
    add_config_options(p, "ServeConfig", "model.tensor_parallel_size=2")
    add_model_options(p, "put strategies in front of another OpenAI server")
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
        *model_flags(args),
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
    return flag_overrides(pairs)


def serve_config(args: argparse.Namespace) -> ServeConfig:
    config = load_config(ServeConfig, args.config, _overrides(args) + args.set)
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


def settings_for(config: ServeConfig) -> ServeSettings:
    name = config.served_model_name or config.model.name
    aliases = [config.model.name] if config.model.name != name else []
    limits = config.model_dump(include=set(ServeLimits.model_fields))
    return ServeSettings(served_model_name=name, aliases=aliases, **limits)


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
