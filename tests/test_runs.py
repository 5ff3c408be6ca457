"""The one results.jsonl reader and the Trace round-trip it rests on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reasoner.errors import RunFolderError
from reasoner.runs import read_results, read_traces
from reasoner.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    Problem,
    SamplingParams,
    Step,
    TokenLogprob,
    Trace,
    Usage,
    Verdict,
)


def _trace(i: int) -> Trace:
    """A Trace using every optional field: chat and raw requests, logprobs, a tree, clusters,
    candidates and a problem with gold fields."""
    chat = GenerationRequest(
        messages=(ChatMessage("system", "be brief"), ChatMessage("user", f"q{i}")),
        sampling=SamplingParams(n=2, temperature=0.7, stop=("\n\n",), seed=i, logprobs=1),
        adapter="lora-a",
    )
    raw = GenerationRequest(prompt=f"q{i} =", sampling=SamplingParams(max_tokens=8))
    verdict = Verdict("correct", 1.0, "ok", "4", {"printed": "4", "oracle": False})
    return Trace(
        problem=Problem(
            str(i),
            f"q{i}",
            "4",
            metadata={"formal": "theorem t : 2 + 2 = 4", "level": 3},
            gold_fields=("formal",),
        ),
        steps=[
            Step(
                chat,
                [
                    Completion("4", "stop", 10, 1, (TokenLogprob("4", -0.25),), 6),
                    Completion("5", "length", 10, 8),
                ],
                [verdict, Verdict("error", 0.0, "timeout")],
            ),
            Step(raw, [Completion(" 4", "stop", 3, 1)], [Verdict("incorrect", 0.0, answer="3")]),
        ],
        prediction="4",
        verdict=verdict,
        usage=Usage(20, 4, 10, 2, 3, 0.5),
        clusters=[0, 1, 0],
        tree=[{"id": 0, "parent": None, "text": "", "score": 0.5, "visits": 2}],
        candidates=[0, 1],
    )


@pytest.mark.parametrize(
    "trace",
    [
        _trace(1),
        Trace(Problem("p", "q"), [], None, Verdict("error", 0.0, "no answer"), Usage()),
    ],
)
def test_a_trace_survives_a_trip_through_a_jsonl_line(trace: Trace) -> None:
    back = Trace.from_dict(json.loads(json.dumps(trace.to_dict())))
    assert back == trace
    assert back.to_dict() == trace.to_dict()


def _write(folder: Path, n: int, tail: bytes = b"") -> Path:
    folder.mkdir()
    path = folder / "results.jsonl"
    lines = b"".join(json.dumps(_trace(i).to_dict()).encode() + b"\n" for i in range(n))
    path.write_bytes(lines + tail)
    return path


@pytest.mark.parametrize("tail", [b'{"problem": {"id": "9"', b'{"problem": \n', b"[1, 2]\n"])
def test_a_cut_off_last_line_is_skipped_with_a_warning_and_left_in_place(
    tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "run", 3, tail)
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="reasoner.runs"):
        rows = read_results(tmp_path / "run")
    assert [r["problem"]["id"] for r in rows] == ["0", "1", "2"]
    assert "cut-off last line" in caplog.text and str(path) in caplog.text
    assert path.read_bytes() == before
    assert not path.with_name("results.jsonl.torn").exists()


def test_a_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "run", 4)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"problem": \n'
    path.write_bytes(b"".join(lines))
    with pytest.raises(RunFolderError, match=r"run/results\.jsonl:2: unreadable result line"):
        read_results(tmp_path / "run")


def test_blank_lines_are_ignored_and_rows_come_back_as_traces(tmp_path: Path) -> None:
    path = _write(tmp_path / "run", 2)
    path.write_bytes(b"\n" + path.read_bytes() + b"\n")
    assert read_traces(tmp_path / "run") == [_trace(0), _trace(1)]


def test_a_missing_results_file_is_an_error_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"results\.jsonl is missing"):
        read_results(tmp_path)
    assert read_results(tmp_path, missing_ok=True) == []


def test_a_row_that_is_not_a_trace_names_its_row(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text('{"problem": {"id": "1"}}\n')
    with pytest.raises(RunFolderError, match="row 1 is not a Trace"):
        read_traces(tmp_path)
