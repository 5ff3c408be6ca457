"""Typed run configs that load from YAML and take dotted overrides (`sampling.temperature=0.7`).

Unknown keys are errors that list the valid ones: a typo must not silently run the default.
Every command reads its config the same way (`add_config_options`, `flag_overrides`,
`load_config`): flags override `--config`, and `--set` overrides both.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reasoner.errors import ConfigError
from reasoner.models.config import Backend, ModelConfig
from reasoner.runner.datasets import AnswerFormat
from reasoner.scale.settings import RaySettings

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ScorerSettings(BaseModel):
    """A verifier that ranks candidates for a strategy; it never sees the gold answer."""

    model_config = ConfigDict(extra="forbid")
    #: the verifier that scores candidates (reward-model, judge, ...); one that reads gold needs
    #: oracle: true
    name: str
    #: keyword options of that verifier (e.g. model: a reward model folder)
    options: dict[str, Any] = {}


class StrategySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: the inference strategy (reasoner list of strategies: greedy, self-consistency, best-of-n,
    #: ...)
    name: str = "greedy"
    #: samples or candidates per problem (the strategy's width)
    n: int = Field(default=1, ge=1)
    options: dict[str, Any] = {}  # the strategy's own knobs, checked by the strategy
    #: the verifier that ranks candidates or steps without the gold answer
    scorer: ScorerSettings | None = None
    # scorers and feedback checkers see the gold, and ones that grade against it are allowed:
    # the run measures search with the answer key, and its summary and report say so
    oracle: bool = False
    budget_tokens: int | None = Field(default=None, ge=1)  # per problem: prompt + completion tokens
    budget_calls: int | None = Field(default=None, ge=1)  # per problem: engine calls


class SamplingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(default=None, ge=0)  # None: the strategy's default
    top_p: float = Field(default=1.0, gt=0, le=1)  # nucleus mass: (0, 1]
    max_tokens: int | None = Field(default=None, ge=1)  # None: the benchmark's default
    #: strings that end a completion (kept out of the text)
    stop: list[str] = []


class UserDataset(BaseModel):
    """A user's own JSONL file in place of the benchmark's data."""

    model_config = ConfigDict(extra="forbid")
    #: the JSONL file, one problem per line
    path: str
    #: the field holding the question
    question_field: str = "question"
    #: the field holding the gold answer
    answer_field: str = "answer"
    #: the field holding a problem id; None: the line number
    id_field: str | None = None
    #: how the gold answer is written (plain, gsm8k `#### X`, number, ...)
    answer_format: AnswerFormat = "plain"


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: a benchmark name from `reasoner list`
    benchmark: str = "gsm8k"
    #: the data split; None: the benchmark's default (its test split)
    split: str | None = None
    #: a user's own JSONL file in place of the benchmark's data
    dataset: UserDataset | None = None
    #: the benchmark data folder; None: $REASONER_DATA_DIR or ../shared/data
    data_dir: str | None = None
    #: a prompt name (prompts/) or folder; None: the benchmark's
    prompt: str | None = None
    #: a verifier name; None: the benchmark's
    verifier: str | None = None
    #: seconds a verifier may take per check before the verdict is `error`
    verifier_timeout_s: float = Field(default=10.0, gt=0)
    #: the model and the backend that serves it
    model: ModelConfig = ModelConfig()
    #: the inference strategy and its options
    strategy: StrategySettings = StrategySettings()
    #: sampling settings of every request (the strategy may override n)
    sampling: SamplingSettings = SamplingSettings()
    limit: int | None = Field(default=None, ge=1)  # a count, never a Python slice bound
    ids: list[str] | None = None  # only these problem ids (before `limit`)
    shard: str | None = None  # "i/n": every n-th problem from the i-th (see `reasoner merge`)
    #: the run's seed: every problem's sampling seed derives from it and the problem id
    seed: int = 0
    #: skip dataset lines that cannot be read (counted in the summary) instead of stopping
    skip_bad: bool = False
    #: the run folder; an existing one is resumed
    out: str | None = None
    #: show a progress bar
    progress: bool = True
    ray: RaySettings | None = None  # scale out on a Ray cluster (reasoner eval --ray ADDRESS)

    @field_validator("shard")
    @classmethod
    def _valid_shard(cls, value: str | None) -> str | None:
        if value is not None:
            from reasoner.runner.shard import parse_shard

            index, count = parse_shard(value)
            return f"{index}/{count}"
        return value


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else ""


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    location = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        section: Any = model
        for part in error["loc"][:-1]:
            field = section.model_fields.get(str(part))
            section = field.annotation if field is not None else None
            # an optional section (`ray: RaySettings | None`) lists the section's keys
            members = [a for a in get_args(section) if isinstance(a, type)]
            section = next((a for a in members if issubclass(a, BaseModel)), section)
            if section is None or not isinstance(section, type):
                break
        valid = (
            sorted(section.model_fields)
            if isinstance(section, type) and issubclass(section, BaseModel)
            else []
        )
        return f"unknown key {location!r}; valid keys here: {', '.join(valid)}"
    return f"{location}: {error['msg']}"


def build_config(
    model: type[ConfigT],
    base: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    source: str = "config",
) -> ConfigT:
    data: dict[str, Any] = dict(base or {})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        set_dotted(data, key.strip(), _parse_value(value))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, model) for e in exc.errors())  # type: ignore[arg-type]
        raise ConfigError(f"{source}: {problems}") from None


def config_file(name: str) -> Path:
    """A config by path, or by the name of a shipped one (`gsm8k-sc8`, `gsm8k-sc8.yaml`): the one
    rule every command's --config follows."""
    from reasoner.resources import asset_dir, asset_names

    path = Path(name)
    if path.is_file():
        return path
    shipped = asset_dir("configs") / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"config {name!r}: no such file, and not a shipped config "
        f"({', '.join(asset_names('configs'))})"
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def add_config_options(parser: argparse.ArgumentParser, model: str, set_example: str) -> None:
    """`--config` (a path or a shipped name) and repeatable `--set KEY=VALUE` for a command whose
    config is the pydantic model `model` names."""
    parser.add_argument("--config", help=f"a YAML {model}: a path, or a name in configs/")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"dotted override, e.g. {set_example} (repeatable)",
    )


def add_model_options(parser: argparse.ArgumentParser, base_url_help: str) -> None:
    """`--model`, `--backend` and `--base-url`: how every command that generates picks its
    model (see `model_flags`)."""
    parser.add_argument("--model", help="embedded alias, local folder, .gguf file or hub id")
    parser.add_argument("--backend", choices=get_args(Backend))
    parser.add_argument("--base-url", help=base_url_help)


def model_flags(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The flags of `add_model_options` as (dotted key, value) pairs for `flag_overrides`."""
    return [
        ("model.name", args.model),
        ("model.backend", args.backend),
        ("model.base_url", args.base_url),
    ]


def flag_overrides(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    """(dotted key, flag value) pairs as overrides; a flag left unset (None) is left out. Values
    are JSON, so a string flag such as `--model 1.5` stays a string."""
    return [f"{key}={json.dumps(value)}" for key, value in pairs if value is not None]


def load_config(model: type[ConfigT], config: str | None, overrides: list[str]) -> ConfigT:
    """A command's config: the `--config` file (a path or a shipped name; none: the defaults),
    then `overrides` in order, so a later one wins (pass the flags' before `--set`'s)."""
    path = config_file(config) if config else None
    base = load_yaml(path) if path else {}
    return build_config(model, base, overrides, source=str(path) if path else "command line")
