"""Bad input is stopped before any engine starts, named in one line, and never costs finished
work. Each test here backs a row of docs/bad-input.md. No vLLM engine: the checks under test run
before one would start; the context-window checks use the real SmolLM2 tokenizer and, for the
end-to-end run, the real model through the transformers backend (fast tier)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reasoner.cli import main
from reasoner.config import EvalConfig, build_config
from reasoner.errors import ConfigError, ModelError, RunFolderError
from reasoner.models.base import Generator
from reasoner.models.batching import Cancelled, CancelToken, current_token
from reasoner.models.config import ModelConfig
from reasoner.models.context import CHARS_PER_TOKEN_BOUND, context_overflow
from reasoner.runner import evaluate
from reasoner.runner.evaluate import run_eval
from reasoner.runner.run_folder import RunFolder
from reasoner.serving.app import cancel_on_disconnect, create_app
from reasoner.serving.service import ServeSettings
from reasoner.types import ChatMessage, Completion, GenerationRequest

MODEL = "scripted-model"


# -- config values -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("sampling.max_tokens=-5", "sampling.max_tokens"),
        ("sampling.temperature=-2", "sampling.temperature"),
        ("sampling.top_p=7", "sampling.top_p"),
        ("sampling.top_p=0", "sampling.top_p"),
        ("model.dtype=float33", "model.dtype"),
        ("model.max_model_len=0", "model.max_model_len"),
        ("strategy.n=0", "strategy.n"),
        ("strategy.budget_tokens=-1", "strategy.budget_tokens"),
        ("verifier_timeout_s=0", "verifier_timeout_s"),
    ],
)
def test_out_of_range_config_values_are_refused_naming_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^cfg\.yaml: {field}: "):
        build_config(EvalConfig, {}, [override], source="cfg.yaml")


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16", "float16"])
def test_every_supported_dtype_is_accepted(dtype: str) -> None:
    assert build_config(EvalConfig, {}, [f"model.dtype={dtype}"]).model.dtype == dtype


@pytest.mark.parametrize(
    "flags",
    [["--limit", "-1"], ["--max-tokens", "-5"], ["--temperature", "-2"]],
)
def test_eval_flags_are_refused_before_the_out_folder_is_touched(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["eval", "gsm8k", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reasoner: error: command line: ")
    assert not out.exists()


# -- the run folder --------------------------------------------------------------------------
def _eval_config(out: Path, data_dir: Path, *overrides: str) -> EvalConfig:
    return build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            "model.name=smollm2-135m-instruct",
            "model.backend=transformers",
            "limit=2",
            "sampling.max_tokens=8",
            f"out={out}",
            f"data_dir={data_dir}",
            "progress=false",
            *overrides,
        ],
    )


def test_a_second_eval_on_a_folder_being_written_is_refused_before_its_engine(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(  # another `reasoner eval` writing `out`
        [sys.executable, "-c", HOLD_FOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )

    def no_engine(config: ModelConfig) -> Any:
        raise AssertionError("the engine must not be loaded for a refused run")

    monkeypatch.setattr(evaluate, "load_generator", no_engine)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"being written by pid {holder.pid}"):
            run_eval(_eval_config(out, data_dir))
        assert [p.name for p in out.iterdir()] == [".lock"]
    finally:
        holder.kill()
        holder.wait()


HOLD_FOLDER = """
import sys, time
from reasoner.runner.run_folder import RunFolder
folder = RunFolder(sys.argv[1])
folder.lock()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_failed_start_leaves_out_as_it_was_and_the_corrected_rerun_runs(
    tmp_path: Path, data_dir: Path, hf_generator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"

    def broken_engine(config: ModelConfig) -> Any:
        raise ModelError("the engine did not start")

    monkeypatch.setattr(evaluate, "load_generator", broken_engine)
    with pytest.raises(ModelError):
        run_eval(_eval_config(out, data_dir, "sampling.max_tokens=4"))
    assert not out.exists()
    # the corrected command (another max_tokens) is a new run, not "a different config"
    summary = run_eval(_eval_config(out, data_dir), generator=hf_generator)
    assert summary["complete"] and summary["problems"] == 2


def test_a_folder_that_is_not_a_run_is_refused_not_taken_over(
    tmp_path: Path, data_dir: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("my own notes\n")
    with pytest.raises(ConfigError, match=r"no config\.yaml, so it is not a reasoner run folder"):
        run_eval(_eval_config(mine, data_dir))
    assert [p.name for p in mine.iterdir()] == ["summary.json"]
    assert (mine / "summary.json").read_text() == "my own notes\n"


def test_out_that_is_a_file_or_under_a_file_is_one_line(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for out in (a_file, a_file / "run"):
        code = main(
            ["eval", "gsm8k", "--data-dir", str(data_dir), "--limit", "1", "--out", str(out)]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "is a file" in err[0], err
    assert a_file.read_text() == "x"


def _write_rows(folder: RunFolder, count: int) -> None:
    folder.prepare({"seed": 0})
    for i in range(count):
        folder.append_result({"problem": {"id": str(i)}})


def test_resume_stops_at_a_corrupt_middle_line_and_keeps_the_file(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    _write_rows(folder, 40)
    lines = folder.results_path.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"problem": {"id": "3"\n'  # damaged in the middle, not by a kill
    folder.results_path.write_bytes(b"".join(lines))
    before = folder.results_path.read_bytes()
    with pytest.raises(ConfigError, match=r"results\.jsonl:4: unreadable result line"):
        folder.load_results()
    assert folder.results_path.read_bytes() == before


def test_only_a_cut_off_last_line_is_set_aside_and_kept(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    _write_rows(folder, 3)
    with open(folder.results_path, "ab") as f:
        f.write(b'{"problem": {"id": "3"')  # killed mid-write
    assert [r["problem"]["id"] for r in folder.load_results()] == ["0", "1", "2"]
    torn = folder.results_path.with_name("results.jsonl.torn")
    assert torn.read_bytes() == b'{"problem": {"id": "3"\n'
    folder.append_result({"problem": {"id": "3"}})
    assert [r["problem"]["id"] for r in folder.load_results()] == ["0", "1", "2", "3"]


# -- verify ----------------------------------------------------------------------------------
def _candidates(tmp_path: Path) -> Path:
    path = tmp_path / "candidates.jsonl"
    path.write_text(json.dumps({"id": "a", "completion": "The answer is 4.", "answer": "4"}) + "\n")
    return path


def test_verify_refuses_to_overwrite_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _candidates(tmp_path)
    before = source.read_text()
    assert main(["verify", str(source), "--out", str(source)]) == 2
    assert "is the candidates file itself" in capsys.readouterr().err
    assert source.read_text() == before


@pytest.mark.parametrize("case", ["out-is-a-folder", "out-under-a-file", "not-utf8", "missing"])
def test_verify_file_errors_are_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _candidates(tmp_path)
    out = tmp_path / "verdicts.jsonl"
    if case == "out-is-a-folder":
        out.mkdir()
    elif case == "out-under-a-file":
        out = source / "verdicts.jsonl"
    elif case == "not-utf8":
        source.write_bytes(b'{"completion": "caf\xe9", "answer": "1"}\n')
    else:
        source = tmp_path / "nowhere.jsonl"
    assert main(["verify", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reasoner: error: "), err
    assert str(source if case in ("not-utf8", "missing") else out) in err[0]


def test_a_dead_base_url_is_one_error_and_no_unretrieved_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from reasoner.models.openai_server import OpenAIServerGenerator

    generator = OpenAIServerGenerator(
        ModelConfig(name="m", backend="openai", base_url="http://127.0.0.1:9/v1", max_retries=0)
    )
    requests = [GenerationRequest(prompt=f"q{i}") for i in range(4)]
    with caplog.at_level(logging.ERROR, logger="asyncio"), pytest.raises(ModelError):
        generator.generate(requests)
    gc.collect()  # an unretrieved task exception is logged when the task is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# -- the context window ----------------------------------------------------------------------
class RefusingTokenizer:
    """Any call fails the test: the prompt should have been refused on its length alone."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tokenised")

    apply_chat_template = __call__


@pytest.fixture(scope="module")
def tokenizer(test_model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(test_model_path)


def test_a_huge_prompt_is_refused_without_tokenising() -> None:
    window = 4096
    huge = "x" * (window * CHARS_PER_TOKEN_BOUND + 1)
    for request in (
        GenerationRequest(prompt=huge),
        GenerationRequest(messages=(ChatMessage("user", huge),)),
    ):
        reason = context_overflow(RefusingTokenizer(), request, window)
        assert reason is not None and "not tokenised" in reason


def test_the_length_bound_never_refuses_a_prompt_that_fits(tokenizer: Any) -> None:
    """Ten times the window in characters, but of a character SmolLM2 packs 16 to a token."""
    dense = GenerationRequest(messages=(ChatMessage("user", "#" * (4096 * 10 + 1)),))
    assert context_overflow(tokenizer, dense, 4096) is None
    assert context_overflow(tokenizer, dense, 512) is not None


def test_the_window_is_checked_in_tokens_of_the_models_tokenizer(tokenizer: Any) -> None:
    question = "How many apples? " * 40  # about 160 tokens, about 700 characters
    request = GenerationRequest(messages=(ChatMessage("user", question),))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens > 100
    assert context_overflow(tokenizer, request, tokens + 1) is None
    reason = context_overflow(tokenizer, request, tokens)
    assert reason is not None and f"{tokens} tokens" in reason


def test_a_problem_longer_than_the_window_is_an_error_row_and_the_run_completes(
    tmp_path: Path, hf_generator: Any
) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        {"id": "short-1", "question": "What is 2 + 2?", "answer": "4"},
        {"id": "long", "question": "Add these up: " + "1 + " * 5000 + "1", "answer": "5001"},
        {"id": "short-2", "question": "What is 3 + 4?", "answer": "7"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = build_config(
        EvalConfig,
        {},
        [
            f"dataset.path={data}",
            "dataset.id_field=id",
            "model.name=smollm2-135m-instruct",
            "model.backend=transformers",
            "sampling.max_tokens=8",
            f"out={tmp_path / 'run'}",
            "progress=false",
        ],
    )
    summary = run_eval(config, generator=hf_generator)
    assert summary["complete"] and summary["problems"] == 3
    assert summary["verifier_errors"] == 1 and summary["scored"] == 2
    results = {r["problem"]["id"]: r for r in RunFolder(tmp_path / "run").load_results()}
    assert results["long"]["verdict"]["status"] == "error"
    assert "context window" in results["long"]["verdict"]["feedback"]
    assert all(results[i]["usage"]["completion_tokens"] > 0 for i in ("short-1", "short-2"))


# -- reasoner serve --------------------------------------------------------------------------
class EchoGenerator(Generator):
    """Answers every request with a fixed text; `overflow` stands in for a model's window."""

    description = "echo:test"

    def __init__(self, tokenizer: Any = None, window: int = 0, fail: Exception | None = None):
        self.tokenizer = tokenizer
        self.window = window
        self.fail = fail
        self.requests: list[GenerationRequest] = []

    def prompt_overflow(self, request: GenerationRequest) -> str | None:
        if self.tokenizer is None:
            return None
        return context_overflow(self.tokenizer, request, self.window)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.requests.extend(requests)
        if self.fail is not None:
            raise self.fail
        return [[Completion("The answer is 4.", "stop", 3, 5)] for _ in requests]


def _client(generator: Generator, **settings: Any) -> TestClient:
    settings = {"served_model_name": MODEL, "batch_window_ms": 0, **settings}
    return TestClient(create_app(generator, ServeSettings(**settings)))


def _chat(content: str = "What is 2 + 2?") -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}]}


def test_serve_api_key_guards_v1_routes() -> None:
    with _client(EchoGenerator(), api_key="s3cret") as client:
        assert client.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            refused = client.post("/v1/chat/completions", json=_chat(), headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/models").status_code == 401
        ok = client.post(
            "/v1/chat/completions", json=_chat(), headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["message"]["content"] == "The answer is 4."


def test_serve_answers_a_too_long_prompt_400_before_the_engine(tokenizer: Any) -> None:
    generator = EchoGenerator(tokenizer, window=4096)
    with _client(generator) as client:
        for content in ("x" * 2_000_000, "apple " * 5000):  # refused by length, by tokens
            reply = client.post("/v1/chat/completions", json=_chat(content))
            assert reply.status_code == 400
            error = reply.json()["error"]
            assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
        assert client.post("/v1/chat/completions", json=_chat()).status_code == 200
    assert len(generator.requests) == 1


def test_serve_answers_an_engine_refusal_400() -> None:
    refusing = EchoGenerator(fail=ValueError("The decoder prompt is longer than the maximum"))
    with _client(refusing) as client:
        reply = client.post("/v1/chat/completions", json=_chat())
    assert reply.status_code == 400
    assert "decoder prompt is longer" in reply.json()["error"]["message"]


def test_a_disconnected_client_fires_its_cancel_token() -> None:
    class Request:
        def __init__(self) -> None:
            self.polls = 0

        async def is_disconnected(self) -> bool:
            self.polls += 1
            return self.polls >= 3

    token = CancelToken()
    asyncio.run(cancel_on_disconnect(Request(), token, poll_s=0))  # type: ignore[arg-type]
    assert token.cancelled and token.reason == "the client disconnected"


def test_serve_reads_the_api_key_from_the_environment_and_warns_when_exposed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from reasoner.serving import cli as serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers(dest="command"))
    monkeypatch.delenv("REASONER_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    exposed = serve.serve_config(parser.parse_args(["serve", "--host", "0.0.0.0"]))
    warning = serve.exposure_warning(exposed)
    assert exposed.api_key is None and warning is not None and "--api-key" in warning
    local = serve.serve_config(parser.parse_args(["serve"]))
    assert serve.exposure_warning(local) is None
    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    keyed = serve.serve_config(parser.parse_args(["serve", "--host", "0.0.0.0"]))
    assert keyed.api_key == "from-env" and serve.exposure_warning(keyed) is None
    assert serve.settings_for(keyed).api_key == "from-env"
    flag = serve.serve_config(parser.parse_args(["serve", "--api-key", "flag"]))
    assert flag.api_key == "flag"


class WaitsForCancel(Generator):
    """Stands in for AsyncVLLMGenerator's contract (many callers, a CancelToken per call): each
    call blocks until its token fires, as an engine request decodes until it is aborted."""

    description = "waits:test"
    concurrent_callers = True

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.aborted = threading.Event()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        token = current_token.get()
        assert token is not None, "the server runs every request under a CancelToken"
        token.register(self.aborted.set)
        self.entered.set()
        assert self.aborted.wait(60), "the request was never cancelled"
        raise Cancelled(token.reason)


def test_a_client_that_disconnects_has_its_engine_call_cancelled() -> None:
    import uvicorn

    generator = WaitsForCancel()
    app = create_app(generator, ServeSettings(served_model_name=MODEL))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn exited"
            time.sleep(0.01)
        body = json.dumps(_chat()).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(head + body)
            assert generator.entered.wait(60), "the request never reached the generator"
            assert not generator.aborted.is_set()
        assert generator.aborted.wait(60), "the engine call outlived its client"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("default_strategy=beam", "unknown default_strategy 'beam'; choose one of: beam-search"),
        ("default_verifier=maths", "unknown default_verifier 'maths'; choose one of: choice"),
    ],
)
def test_serve_names_the_valid_defaults_before_loading_a_model(
    override: str, expected: str
) -> None:
    import argparse

    from reasoner.serving import cli as serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(ConfigError, match=expected):
        serve.run(parser.parse_args(["serve", "--set", override]))
