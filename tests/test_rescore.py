"""`reasoner rescore` on real run folders written through RunFolder, graded by the real `math`
verifier. The saved verdicts are made stale on purpose (as an older extraction would have left
them), so re-scoring has something to change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reasoner.cli import main
from reasoner.config import EvalConfig
from reasoner.errors import ReasonerError
from reasoner.runner import rescore
from reasoner.runner.metrics import summarize
from reasoner.runner.run_folder import RunFolder
from reasoner.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    Problem,
    Step,
    Trace,
    Usage,
    Verdict,
)

REQUEST = GenerationRequest(messages=(ChatMessage("user", "q"),))


def _stale(answer: str | None) -> Verdict:
    """What an older extraction said of a sample: wrong, whatever the completion says."""
    return Verdict("incorrect", 0.0, "stale", answer)


def _trace(problem: Problem, texts: list[str], answers: list[str | None]) -> Trace:
    completions = [Completion(t, "stop", 5, 7) for t in texts]
    verdicts = [_stale(a) for a in answers]
    return Trace(
        problem=problem,
        steps=[Step(REQUEST, completions, verdicts)],
        prediction=answers[0],
        verdict=verdicts[0],
        usage=Usage(prompt_tokens=5, completion_tokens=7 * len(texts), engine_calls=1),
        clusters=[0] * len(texts),
    )


def _write_run(path: Path, strategy: str, n: int, traces: list[Trace]) -> RunFolder:
    folder = RunFolder(path)
    config = EvalConfig(benchmark="gsm8k", verifier="math")
    config = config.model_copy(
        update={"strategy": config.strategy.model_copy(update={"name": strategy, "n": n})}
    )
    folder.prepare(config.model_dump(mode="json"))
    rows = []
    for trace in traces:
        folder.append_result(trace.to_dict())
        rows.append(trace.to_dict())
    folder.write_summary({"benchmark": "gsm8k", "strategy": strategy, **summarize(rows)})
    folder.unlock()  # the run has finished
    return folder


@pytest.fixture
def sc_run(tmp_path: Path) -> RunFolder:
    """Self-consistency, unequal n: problem a has 3 samples (two say 12, one says 7), problem b
    has 2 (both wrong), all saved as incorrect."""
    a = Problem("a", "q", "12")
    b = Problem("b", "q", "5")
    return _write_run(
        tmp_path / "runs" / "sc",
        "self-consistency",
        3,
        [
            _trace(a, ["So 7 apples.\n#### 7", "The answer is 12.", "#### 12"], ["7", None, None]),
            _trace(b, ["#### 4", "The answer is 6."], ["4", "6"]),
        ],
    )


def test_dry_run_reports_changes_and_writes_nothing(
    sc_run: RunFolder, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in sc_run.path.iterdir()}
    assert main(["rescore", "--dry-run", str(sc_run.path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy  0.000 -> 0.500" in out
    assert "1 of 2 problems flipped (1 incorrect->correct)" in out
    assert "2 of 5 sample verdicts changed" in out
    assert "dry run: nothing written" in out
    assert {p.name: p.read_bytes() for p in sc_run.path.iterdir()} == before


def test_rescore_rewrites_results_and_keeps_the_old_summary(sc_run: RunFolder) -> None:
    old_summary = json.loads(sc_run.summary_path.read_text())
    assert main(["rescore", str(sc_run.path)]) == 0
    rows = sc_run.load_results()
    a, b = rows
    # re-verified, re-clustered (7 | 12 12) and re-voted: the majority 12 is the prediction
    assert [v["status"] for v in a["steps"][0]["verdicts"]] == ["incorrect", "correct", "correct"]
    assert a["clusters"] == [0, 1, 1]
    assert (a["prediction"], a["verdict"]["status"]) == ("12", "correct")
    assert b["verdict"]["status"] == "incorrect"
    summary = json.loads(sc_run.summary_path.read_text())
    assert summary["accuracy"] == 0.5 and summary["benchmark"] == "gsm8k"
    # pass@1 = (2/3 + 0/2) / 2; pass@3 only over problem a (n=3)
    assert summary["pass@k"]["1"] == pytest.approx(1 / 3)
    assert summary["at_k_problems"] == {"1": 2, "2": 2, "3": 1}
    assert json.loads((sc_run.path / rescore.BEFORE_SUMMARY).read_text()) == old_summary
    record = json.loads((sc_run.path / rescore.RECORD).read_text())
    assert record[-1]["old"]["accuracy"] == 0.0 and record[-1]["new"]["accuracy"] == 0.5
    assert record[-1]["flips"] == [
        {"id": "a", "old": "incorrect", "new": "correct", "old_answer": "7", "new_answer": "12"}
    ]
    # a second rescore changes nothing and keeps the first original summary
    assert main(["rescore", str(sc_run.path)]) == 0
    assert json.loads((sc_run.path / rescore.BEFORE_SUMMARY).read_text()) == old_summary
    assert len(json.loads((sc_run.path / rescore.RECORD).read_text())) == 2
    assert sc_run.load_results() == rows


def test_a_run_still_being_written_is_not_rescored(
    sc_run: RunFolder, capsys: pytest.CaptureFixture[str]
) -> None:
    results = sc_run.results_path.read_bytes()
    live = subprocess.Popen(  # another process holds the folder, as a running eval does
        [sys.executable, "-c", LIVE_WRITER, str(sc_run.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "locked"
        assert main(["rescore", str(sc_run.path)]) != 0
        assert f"being written by pid {live.pid}" in capsys.readouterr().out
        assert sc_run.results_path.read_bytes() == results
    finally:
        live.kill()
        live.wait()
    assert main(["rescore", str(sc_run.path)]) == 0  # the holder's death released it


def test_results_that_grew_while_regrading_are_not_replaced(sc_run: RunFolder) -> None:
    result = rescore.rescore_folder(sc_run.path)
    with sc_run.results_path.open("a") as results:  # a problem finished meanwhile
        results.write(sc_run.results_path.read_text().splitlines()[0] + "\n")
    grown = sc_run.results_path.read_bytes()
    with pytest.raises(ReasonerError, match="changed while it was being re-scored"):
        rescore.write_rescored(result)
    assert sc_run.results_path.read_bytes() == grown
    assert not (sc_run.path / rescore.BEFORE_SUMMARY).exists()  # nothing was written


LIVE_WRITER = """
import sys, time
from reasoner.runner.run_folder import RunFolder
folder = RunFolder(sys.argv[1])
folder.lock()  # held while the object lives
print("locked", flush=True)
time.sleep(600)
"""


def test_a_new_verifier_error_writes_nothing(
    sc_run: RunFolder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken:
        def verify_batch(self, pairs: list[Any]) -> list[Verdict]:
            return [Verdict("error", 0.0, "worker died") for _ in pairs]

        def verify(self, problem: Problem, completion: Completion) -> Verdict:
            return Verdict("error", 0.0, "worker died")

        def equivalent(self, problem: Problem, a: str, b: str) -> bool:
            return a == b

        def close(self) -> None:
            pass

    monkeypatch.setattr(rescore, "run_verifier", lambda config: ("math", Broken()))
    before = sc_run.results_path.read_bytes()
    assert main(["rescore", str(sc_run.path)]) == 1
    assert "NOT written" in capsys.readouterr().out
    assert sc_run.results_path.read_bytes() == before
    assert not (sc_run.path / rescore.RECORD).exists()


def test_best_of_n_keeps_the_pick_and_regrades_it(tmp_path: Path) -> None:
    problem = Problem("p", "q", "3")
    trace = _trace(problem, ["#### 2", "#### 3"], ["2", None])
    picked = Verdict("incorrect", 0.0, "stale", None, {"picked_sample": 1, "picked_by": "score"})
    trace.verdict, trace.prediction = picked, None
    folder = _write_run(tmp_path / "bon", "best-of-n", 2, [trace])
    result = rescore.rescore_folder(folder.path)
    row = result.rows[0]
    assert (row["prediction"], row["verdict"]["status"]) == ("3", "correct")
    assert row["verdict"]["details"]["picked_sample"] == 1  # the strategy's details are kept


def test_execute_and_vote_regrades_solver_answers_and_counts_round_zero(tmp_path: Path) -> None:
    """A fol-prover row written before candidates were declared: 2 first programs (one could not
    be decided), one repair; pass@k must count the two first programs only."""
    problem = Problem("p", "q", "A")
    error = Verdict("error", 0.0, "does not parse", None, {"error": "parse_error"})
    trace = Trace(
        problem=problem,
        steps=[
            Step(
                REQUEST,
                [Completion("P1", "stop", 5, 7), Completion("P2", "stop", 5, 7)],
                [error, _stale("B")],
            ),
            Step(REQUEST, [Completion("P1 fixed", "stop", 5, 7)], [_stale("A")]),
        ],
        prediction="A",
        verdict=_stale("A"),
        usage=Usage(),
        clusters=[-1, 0, 1],
        tree=[
            {"id": 0, "chain": 0, "round": 0, "answer": None},
            {"id": 1, "chain": 1, "round": 0, "answer": "B"},
            {"id": 2, "chain": 0, "round": 1, "answer": "A"},
        ],
    )
    config = EvalConfig(benchmark="prontoqa", verifier="choice")
    config = config.model_copy(
        update={"strategy": config.strategy.model_copy(update={"name": "fol-prover", "n": 2})}
    )
    folder = RunFolder(tmp_path / "fol")
    folder.prepare(config.model_dump(mode="json"))
    folder.append_result(trace.to_dict())
    row = rescore.rescore_folder(folder.path).rows[0]
    statuses = [v["status"] for step in row["steps"] for v in step["verdicts"]]
    assert statuses == ["error", "incorrect", "correct"]  # undecided program kept as it was
    assert row["candidates"] == [0, 1]
    assert row["verdict"]["status"] == "correct"
    summary = summarize([row])
    assert summary["pass@k"]["2"] == 0.0  # the repair that got it right is not a first sample


def test_find_runs_descends_into_loops_and_names_what_it_skips(
    sc_run: RunFolder, tmp_path: Path
) -> None:
    train = tmp_path / "runs" / "round" / "train"
    train.mkdir(parents=True)
    (train / "config.yaml").write_text("stage: sft\n")
    runs, skipped = rescore.find_runs([tmp_path / "runs"])
    assert runs == [sc_run.path]
    assert [(p, "not an eval run" in why) for p, why in skipped] == [(train, True)]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReasonerError, match="no eval run folder"):
        rescore.find_runs([empty])


def test_self_refine_regrades_the_last_round_and_counts_it_alone(tmp_path: Path) -> None:
    problem = Problem("p", "q", "9")
    rounds = [
        Step(REQUEST, [Completion(t, "stop", 5, 7)], [_stale(None)]) for t in ("#### 8", "#### 9")
    ]
    final = Verdict("incorrect", 0.0, "stale", None, {"rounds": 2, "stop": "max_rounds"})
    trace = Trace(problem, rounds, None, final, Usage(), clusters=[0, 1])
    folder = _write_run(tmp_path / "refine", "self-refine", 1, [trace])
    (folder.path / "results.jsonl").open("a").write('{"torn": ')  # a row being written
    before = folder.results_path.read_bytes()
    result = rescore.rescore_folder(folder.path)
    assert folder.results_path.read_bytes() == before  # reading does not cut the torn line
    row = result.rows[0]
    assert row["candidates"] == [1]
    assert (row["prediction"], row["verdict"]["status"]) == ("9", "correct")
    assert row["verdict"]["details"]["stop"] == "max_rounds"
    assert "pass@k" not in summarize(result.rows)  # one candidate: accuracy says it all


def test_a_cut_off_last_line_survives_a_rescore_in_the_torn_file(sc_run: RunFolder) -> None:
    tail = b'{"problem": {"id": "c"'  # a run killed mid-write
    with open(sc_run.results_path, "ab") as f:
        f.write(tail)
    before = sc_run.results_path.read_bytes()
    assert main(["rescore", "--dry-run", str(sc_run.path)]) == 0
    assert sc_run.results_path.read_bytes() == before  # a reader leaves it where it is
    assert main(["rescore", str(sc_run.path)]) == 0
    assert [r["problem"]["id"] for r in sc_run.load_results()] == ["a", "b"]
    assert sc_run.results_path.with_name("results.jsonl.torn").read_bytes() == tail + b"\n"


def test_a_refused_request_stays_an_error_after_a_rescore(tmp_path: Path) -> None:
    """A problem longer than the context window was saved as `error` (empty completions the
    engine never generated): re-grading must not turn it into a wrong answer."""
    problem = Problem("long", "q", "3")
    verdict = Verdict("error", 0.0, "too long", None, {"error": "context_length_exceeded"})
    trace = Trace(
        problem=problem,
        steps=[Step(REQUEST, [Completion("", "error", 0, 0)] * 2, [verdict] * 2)],
        prediction=None,
        verdict=verdict,
        usage=Usage(),
        clusters=[-1, -1],
    )
    folder = _write_run(tmp_path / "run", "self-consistency", 2, [trace])
    result = rescore.rescore_folder(folder.path)
    (row,) = result.rows
    assert row["verdict"]["status"] == "error"
    assert [v["status"] for v in row["steps"][0]["verdicts"]] == ["error", "error"]
    assert result.new_summary["verifier_errors"] == 1 and result.new_summary["scored"] == 0


def test_mixed_pal_and_cot_runs_regrade_the_chain_of_thought_samples(tmp_path: Path) -> None:
    """Program-aided with cot_n: step 0 holds programs (graded by their printed line), step 1
    chain-of-thought samples, graded by their own text."""
    problem = Problem("p", "q", "12")
    programs = Step(
        REQUEST,
        [Completion("```python\nprint(12)\n```", "stop", 5, 7)],
        [Verdict("incorrect", 0.0, "stale", "7", {"printed": "12"})],
    )
    cot = Step(
        REQUEST,
        [Completion("So it is 12. The answer is \\boxed{12}.", "stop", 5, 7)] * 2,
        [_stale("7"), _stale("7")],
    )
    trace = Trace(problem, [programs, cot], "7", _stale("7"), Usage(), clusters=[0, 0, 0])
    folder = _write_run(tmp_path / "run", "program-aided", 1, [trace])
    (row,) = rescore.rescore_folder(folder.path).rows
    statuses = [v["status"] for step in row["steps"] for v in step["verdicts"]]
    assert statuses == ["correct", "correct", "correct"]
    assert row["verdict"]["status"] == "correct" and row["prediction"] == "12"
