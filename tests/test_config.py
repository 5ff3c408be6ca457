from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reasoner.cli import main
from reasoner.config import EvalConfig, build_config, load_yaml
from reasoner.errors import ConfigError, ModelError
from reasoner.models.resolve import resolve_model


def test_dotted_overrides_are_typed() -> None:
    config = build_config(
        EvalConfig,
        {"strategy": {"name": "self-consistency"}},
        ["strategy.n=8", "sampling.temperature=0.5", "model.name=foo", 'sampling.stop=["\\n\\n"]'],
    )
    assert config.strategy.n == 8
    assert config.sampling.temperature == 0.5
    assert config.model.name == "foo"
    assert config.sampling.stop == ["\n\n"]


def test_unknown_key_names_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(EvalConfig, {}, ["sampling.temprature=0.5"])
    message = str(info.value)
    assert "sampling.temprature" in message
    assert "temperature" in message and "max_tokens" in message


def test_yaml_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  nmae: x\n")
    with pytest.raises(ConfigError) as info:
        build_config(EvalConfig, load_yaml(path), source=str(path))
    assert str(path) in str(info.value) and "model.nmae" in str(info.value)


def _names(data: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(kind, name) of every part a config picks by name, anywhere in its validated dump."""
    if isinstance(data, dict):
        if key in ("strategy", "scorer") and isinstance(data.get("name"), str):
            yield key, data["name"]
        for inner_key, value in data.items():
            yield from _names(value, inner_key)
    elif isinstance(data, list):
        for value in data:
            yield from _names(value)
    elif key.endswith("_prompt") and isinstance(data, str):  # e.g. a strategy's cot_prompt
        yield "prompt", data
    elif key in ("verifier", "benchmark", "stage", "prompt") and isinstance(data, str):
        yield key, data


def test_shipped_configs_are_valid_and_their_names_resolve() -> None:
    """Eval, training-stage and loop configs, each checked by the command that reads it; every
    strategy, scorer, verifier, benchmark, prompt and trainer they name is registered (the
    registries are not patched here, so a missing entry fails)."""
    from reasoner.loops.config import IterateConfig
    from reasoner.prompts import available_prompts
    from reasoner.resources import asset_dir
    from reasoner.runner.benchmarks import available_benchmarks, load_benchmark
    from reasoner.strategies import STRATEGIES
    from reasoner.training import TRAINERS
    from reasoner.training.config import load_stage_config
    from reasoner.verifiers import VERIFIERS

    registered = {
        "strategy": set(STRATEGIES),
        "scorer": set(VERIFIERS),
        "verifier": set(VERIFIERS),
        "benchmark": set(available_benchmarks()),
        "stage": set(TRAINERS),
        "prompt": set(available_prompts()),
    }
    kinds = set()
    named: set[tuple[str, str]] = set()
    paths = sorted(asset_dir("configs").glob("*.yaml"))  # the folder the package ships
    for path in paths:
        data = load_yaml(path)
        config: Any
        if "rounds" in data:
            config = build_config(IterateConfig, data, source=str(path))
            kinds.add("iterate")
        elif "stage" in data:
            config = load_stage_config(data["stage"], str(path))
            kinds.add("train")
        else:
            config = build_config(EvalConfig, data, source=str(path))
            kinds.add("eval")
        for kind, name in _names(config.model_dump(mode="json")):
            named.add((kind, name))
            assert name in registered[kind], f"{path.name}: {kind} {name!r} is not registered"
    assert kinds == {"eval", "train", "iterate"}
    benchmarks = {name for kind, name in named if kind == "benchmark"}
    for benchmark in benchmarks:  # and the verifier and prompt each of those benchmarks uses
        spec = load_benchmark(benchmark)
        assert spec.verifier in VERIFIERS and spec.prompt in registered["prompt"]
    # every kind is found in some config, so the walk above cannot pass by finding nothing
    assert {kind for kind, _ in named} == set(registered)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "gsm9k"], "unknown benchmark 'gsm9k'; choose one of: aime24, amc23, ar_lsat"),
        (["eval", "gsm8k", "--strategy", "beam"], "unknown strategy 'beam'; choose one of:"),
        (["eval", "gsm8k", "--set", "verifier=nope"], "unknown verifier 'nope'"),
        (["eval", "gsm8k", "--set", "model.backend=tgi"], "model.backend"),
        (["eval", "gsm8k", "--field", "question=q"], "pass --dataset too"),
    ],
)
def test_cli_bad_choices_fail_fast_with_the_valid_ones(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert expected in capsys.readouterr().err


def test_unknown_model_lists_the_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        resolve_model("no-such-org/no-such-model")
    message = str(info.value)
    assert "qwen2.5-coder-0.5b-instruct" in message and "smollm2-135m-instruct" in message
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("./missing-folder")


def test_every_command_reads_flags_then_config_then_set(tmp_path: Path) -> None:
    """One path for eval, compare, train, iterate and serve: the file is the base, flags
    override it, and --set overrides the flags."""
    from reasoner.config import flag_overrides, load_config

    path = tmp_path / "mine.yaml"
    path.write_text("limit: 3\nseed: 7\nmodel:\n  name: from-file\n")
    flags = flag_overrides([("limit", 5), ("model.name", "1.5"), ("split", None)])
    config = load_config(EvalConfig, str(path), [*flags, "limit=9"])
    assert config.limit == 9  # --set beats the flag
    assert config.model.name == "1.5"  # a flag's string stays a string
    assert config.seed == 7  # the file where nothing overrides it
    assert config.split is None  # an unset flag overrides nothing


def test_config_takes_a_shipped_name_and_names_itself_in_errors() -> None:
    from reasoner.config import load_config

    shipped = load_config(EvalConfig, "gsm8k-sc8", [])
    assert shipped.strategy.name == "self-consistency"
    with pytest.raises(ConfigError, match=r"gsm8k-sc8\.yaml: unknown key 'limt'"):
        load_config(EvalConfig, "gsm8k-sc8", ["limt=1"])
    with pytest.raises(ConfigError, match="command line: unknown key 'limt'"):
        load_config(EvalConfig, None, ["limt=1"])
