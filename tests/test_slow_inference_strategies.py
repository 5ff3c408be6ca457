"""Best-of-N, self-refine and program-aided solving end to end through `run_eval` on the real
vLLM engine (SmolLM2) and 3 GSM8K problems, every engine call counted: one call per step for
all problems, a judge scorer that runs on the same engine and never sees the gold answer, and
usage that adds up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _counting_generator import CountingGenerator

from reasoner.config import EvalConfig, build_config
from reasoner.runner.evaluate import run_eval
from reasoner.runner.run_folder import RunFolder

pytestmark = pytest.mark.slow

LIMIT = 3
MAX_TOKENS = 128


@pytest.fixture
def counting(vllm_generator: Any) -> Iterator[CountingGenerator]:
    yield CountingGenerator(vllm_generator)


def _eval(
    out: Path, data_dir: Path, generator: CountingGenerator, *overrides: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    config = build_config(
        EvalConfig,
        {},
        [
            "benchmark=gsm8k",
            "model.name=smollm2-135m-instruct",
            f"limit={LIMIT}",
            f"sampling.max_tokens={MAX_TOKENS}",
            f"out={out}",
            f"data_dir={data_dir}",
            "progress=false",
            *overrides,
        ],
    )
    summary = run_eval(config, generator=generator)
    return summary, RunFolder(out).load_results()


def _check_usage(rows: list[dict[str, Any]], summary: dict[str, Any], judged: bool = False) -> None:
    """Every usage field is filled, and the summary's totals are the rows' sums. With a judge
    scorer, the judge's own tokens are counted on top of the policy's."""
    for row in rows:
        usage = row["usage"]
        completions = [c for step in row["steps"] for c in step["completions"]]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        policy_completion = sum(c["completion_tokens"] for c in completions)
        policy_prompt = sum(s["completions"][0]["prompt_tokens"] for s in row["steps"])
        if judged:
            assert usage["completion_tokens"] > policy_completion
            assert usage["prompt_tokens"] > policy_prompt
        else:
            assert usage["completion_tokens"] == policy_completion
            assert usage["prompt_tokens"] == policy_prompt
        assert 0 <= usage["cached_prompt_tokens"] <= usage["prompt_tokens"]
        assert usage["engine_calls"] == len(row["steps"])
        assert usage["verifier_calls"] > 0 and usage["wall_time_s"] > 0
    assert summary["problems"] == LIMIT and summary["complete"]
    assert summary["tokens"]["prompt"] == sum(r["usage"]["prompt_tokens"] for r in rows)
    assert summary["tokens"]["completion"] == sum(r["usage"]["completion_tokens"] for r in rows)
    assert summary["engine_requests"] == sum(r["usage"]["engine_calls"] for r in rows)


def _user_text(request: Any) -> str:
    return "\n".join(m.content for m in request.messages if m.role == "user")


def test_best_of_n_is_one_generation_call_and_one_blind_judge_call(
    tmp_path: Path, data_dir: Path, counting: CountingGenerator
) -> None:
    n = 4
    summary, rows = _eval(
        tmp_path / "run",
        data_dir,
        counting,
        "strategy.name=best-of-n",
        f"strategy.n={n}",
        "strategy.options.select=weighted-majority",
        "strategy.scorer.name=judge",
        "strategy.scorer.options.max_tokens=48",
    )
    # one call for all problems' samples, then one judge call for all samples
    assert counting.calls == [LIMIT, LIMIT * n]
    generation, judged = counting.requests[:LIMIT], counting.requests[LIMIT:]
    assert all(r.sampling.n == n for r in generation)
    # the judge never sees the gold answer: its reference slot is empty
    assert all("Reference answer:\n(none given)" in _user_text(r) for r in judged)
    for row in rows:
        (step,) = row["steps"]
        assert len(step["completions"]) == n == len(step["verdicts"]) == len(row["tree"])
        picked = [node["id"] for node in row["tree"] if node["picked"]]
        assert picked == [row["verdict"]["details"]["picked_sample"]]
        assert row["verdict"]["status"] == step["verdicts"][picked[0]]["status"]
        assert row["usage"]["verifier_calls"] == 2 * n
    assert summary["samples_per_problem"] == n and "pass@k" in summary
    _check_usage(rows, summary, judged=True)


def _rounds(rows: list[dict[str, Any]]) -> list[int]:
    """How many problems took part in each round."""
    most = max(len(r["steps"]) for r in rows)
    return [sum(len(r["steps"]) > k for r in rows) for k in range(most)]


def test_self_refine_with_a_judge_is_one_call_per_round_for_the_problems_refining(
    tmp_path: Path, data_dir: Path, counting: CountingGenerator
) -> None:
    summary, rows = _eval(
        tmp_path / "run",
        data_dir,
        counting,
        "strategy.name=self-refine",
        "strategy.options.max_rounds=2",
        "strategy.scorer.name=judge",
        "strategy.scorer.options.prompt=judge_reference_free",
        "strategy.scorer.options.max_tokens=48",
    )
    # per round: one generation call and one judge call, each for the problems still refining
    assert counting.calls == [size for active in _rounds(rows) for size in (active, active)]
    for row in rows:
        assert row["usage"]["verifier_calls"] == 2 * len(row["steps"])  # verifier + judge
        stop = row["tree"][-1]["stop"]
        assert stop in ("passed", "max_rounds")
        assert (stop == "passed") == (row["tree"][-1]["feedback_status"] == "correct")
        for previous, step in zip(row["steps"], row["steps"][1:], strict=False):
            messages = step["request"]["messages"]
            assert messages[-2] == {
                "role": "assistant",
                "content": previous["completions"][0]["text"],
            }
    _check_usage(rows, summary, judged=True)


def test_self_refine_with_oracle_feedback_refines_every_wrong_answer_once(
    tmp_path: Path, data_dir: Path, counting: CountingGenerator
) -> None:
    summary, rows = _eval(
        tmp_path / "run",
        data_dir,
        counting,
        "strategy.name=self-refine",
        "strategy.options.max_rounds=1",
        "strategy.oracle=true",
        "strategy.options.feedback=verifier",
        "strategy.options.feedback_sees_answer=true",
        "strategy.options.feedback_detail=verdict",
    )
    wrong = [r for r in rows if r["steps"][0]["verdicts"][0]["status"] != "correct"]
    assert counting.calls == [LIMIT] + ([len(wrong)] if wrong else [])
    assert all(len(r["steps"]) == 2 for r in wrong)
    assert all(len(r["steps"]) == 1 for r in rows if r not in wrong)
    for row in wrong:
        # the refine prompt starts with round 0's: its prefix comes from the prefix cache
        assert row["steps"][1]["completions"][0]["cached_prompt_tokens"] > 0
        assert row["usage"]["verifier_calls"] == 2  # the oracle's verdicts are the run's
    _check_usage(rows, summary)


def test_program_aided_is_one_call_and_every_program_is_run(
    tmp_path: Path, data_dir: Path, counting: CountingGenerator
) -> None:
    n = 2
    summary, rows = _eval(
        tmp_path / "run",
        data_dir,
        counting,
        "strategy.name=program-aided",
        f"strategy.n={n}",
        "sampling.temperature=0.7",
    )
    assert counting.calls == [LIMIT]
    assert all("```python" in r.messages[0].content for r in counting.requests)
    for row in rows:
        (step,) = row["steps"]
        assert len(step["verdicts"]) == n
        for verdict in step["verdicts"]:
            # each program either ran in the sandbox or had no code to run
            ran = "sandbox_status" in verdict["details"]
            assert ran or verdict["feedback"] == "no code found"
            if verdict["answer"] is not None:
                assert verdict["details"]["sandbox_status"] == "ok"
        assert row["usage"]["verifier_calls"] == n
    _check_usage(rows, summary)
