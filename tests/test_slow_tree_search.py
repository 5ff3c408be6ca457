"""Beam search, DVTS, tree-of-thought and MCTS on the real vLLM engine (SmolLM2), on GSM8K.

SmolLM2-135M is no grader, so the judge's step scores are near noise: these tests check the
machinery. Each search round must be ONE engine call holding every active problem's frontier
(the judge's calls are counted apart, on their own wrapper), the tree in the Trace must account
for every request and token, and a budget must stop a search.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _counting_generator import CountingGenerator

from reasoner.prompts import load_prompt
from reasoner.runner.datasets import load_dataset, load_manifest
from reasoner.strategies.base import Budget, Strategy, StrategyConfig
from reasoner.strategies.beam_search import DVTS, BeamSearch
from reasoner.strategies.mcts import MCTS
from reasoner.strategies.tot import TreeOfThought
from reasoner.types import Problem, SamplingParams, Trace
from reasoner.verifiers import load

pytestmark = pytest.mark.slow

STEP_TOKENS = 48
JUDGE_TOKENS = 16


@pytest.fixture(scope="module")
def problems(data_dir: Path) -> list[Problem]:
    return load_dataset(load_manifest("gsm8k"), "test", str(data_dir)).problems[:3]


@pytest.fixture(scope="module")
def verifier() -> Any:
    with load("math") as math_verifier:
        yield math_verifier


class Harness:
    """The engine counted on two wrappers: the strategy's calls and the judge's."""

    def __init__(self, vllm_generator: Any) -> None:
        self.engine = CountingGenerator(vllm_generator)
        self.judge_engine = CountingGenerator(vllm_generator)
        self.judge = load(
            "judge", generator=self.judge_engine, prompt="step_judge", max_tokens=JUDGE_TOKENS
        )

    def run(
        self,
        strategy: Strategy,
        problems: list[Problem],
        verifier: Any,
        n: int = 1,
        budget: Budget | None = None,
        oracle: bool = False,
        **options: Any,
    ) -> tuple[list[Trace], list[str]]:
        self.engine.calls.clear()
        self.engine.requests.clear()
        self.judge_engine.calls.clear()
        self.judge_engine.completion_tokens = 0
        config = StrategyConfig(
            load_prompt("math_cot"),
            SamplingParams(temperature=0.8, max_tokens=STEP_TOKENS),
            n=n,
            seed=1,
            options=options,
            budget=budget or Budget(),
            scorer=self.judge,
            oracle=oracle,
        )
        finished: list[str] = []
        traces = strategy.run(
            problems,
            self.engine,
            verifier,
            config,
            on_trace=lambda t: finished.append(t.problem.id),
        )
        return traces, finished


@pytest.fixture(scope="module")
def harness(vllm_generator: Any) -> Harness:
    return Harness(vllm_generator)


def rounds_of(trace: Trace, root_requests: int = 1) -> Counter[int]:
    """Requests per round: the distinct parents of the nodes a round generated, where the root
    is expanded by `root_requests` requests (DVTS: one per subtree)."""
    parents: dict[int, set[int]] = {}
    for node in trace.tree:
        if node["round"] is not None:
            parents.setdefault(node["round"], set()).add(node["parent"])
    return Counter({r: len(p) + (root_requests - 1 if 0 in p else 0) for r, p in parents.items()})


def check_accounting(harness: Harness, traces: list[Trace]) -> None:
    """Every node's tokens and every judge reply add up to the usage, every candidate was
    verified, and the tree is a tree."""
    node_tokens = sum(n["tokens"] for t in traces for n in t.tree)
    assert sum(t.usage.completion_tokens for t in traces) == (
        node_tokens + harness.judge_engine.completion_tokens
    )
    for trace in traces:
        tree = trace.tree
        ids = {node["id"] for node in tree}
        assert tree[0]["parent"] is None and all(n["parent"] in ids for n in tree[1:])
        assert trace.usage.completion_tokens >= sum(n["tokens"] for n in tree)
        assert trace.usage.engine_calls == len(rounds_of(trace))
        assert 0 <= trace.usage.cached_prompt_tokens <= trace.usage.prompt_tokens
        assert trace.usage.wall_time_s > 0
        step = trace.steps[0]
        assert step.request.prompt and "<|im_start|>assistant" in step.request.prompt
        assert len(step.completions) == len(step.verdicts) == len(trace.clusters) >= 1
        assert sum(1 for n in tree if n.get("chosen")) == 1
        assert trace.verdict in step.verdicts
        # the scorer scored every evaluated node once (beam search: every node; MCTS with
        # backup: leaf, the selected leaves); the verifier every candidate once
        searched = [
            n
            for n in tree[1:]
            if not n.get("finish")
            and (n["score"] is not None or n.get("score_error") or n.get("reward") is not None)
        ]
        assert trace.usage.verifier_calls >= len(searched) + len(step.completions)


def check_one_call_per_round(harness: Harness, traces: list[Trace], root_requests: int = 1) -> None:
    """Call r of the engine holds exactly the requests of round r of every problem's tree."""
    per_round: Counter[int] = Counter()
    for trace in traces:
        per_round.update(rounds_of(trace, root_requests))
    assert harness.engine.calls == [per_round[r] for r in range(len(harness.engine.calls))]
    # the first round asks for every problem at once
    assert harness.engine.calls[0] >= len(traces)


def test_beam_search_batches_every_round_and_stores_the_tree(
    harness: Harness, problems: list[Problem], verifier: Any
) -> None:
    traces, finished = harness.run(BeamSearch(), problems, verifier, n=4, beam_width=2, max_depth=3)
    assert (
        sorted(finished) == sorted(p.id for p in problems) == sorted(t.problem.id for t in traces)
    )
    check_accounting(harness, traces)
    check_one_call_per_round(harness, traces)
    assert len(harness.engine.calls) <= 3  # one call per depth at most
    # the judge: one call per round, one request per node generated in that round
    generated = Counter(n["round"] for t in traces for n in t.tree if n["round"] is not None)
    assert harness.judge_engine.calls == [generated[r] for r in range(len(generated))]
    for trace in traces:
        tree = trace.tree
        first = [n for n in tree if n["parent"] == 0]
        assert len(first) == 4  # N first steps from the root
        later = [n for n in tree if n["parent"] not in (None, 0)]
        for parent in {n["parent"] for n in later}:
            assert not tree[parent]["terminal"]
        # the width stays N: survivors share N samples a round (duplicated up when few)
        assert all(v == 4 for v in Counter(n["round"] for n in later).values())
        assert len({n["parent"] for n in later if n["round"] == 1}) <= 2  # N/M kept beams
        assert all(n["depth"] <= 3 for n in tree)
        assert all(n["terminal"] for n in tree if n["depth"] == 3)
        assert all(n["score"] is not None or n.get("score_error") for n in tree[1:])
        assert all(tree[c]["id"] == c for c in range(len(tree)))
        candidates = [n for n in tree if n.get("candidate")]
        assert len(candidates) == len(trace.steps[0].completions)
        assert all(n["terminal"] for n in candidates)
    # every request continues a rendered chat with the steps of a path
    roots = {t.steps[0].request.prompt for t in traces}
    for request in harness.engine.requests:
        assert request.messages is None and request.prompt is not None
        assert any(request.prompt.startswith(root) for root in roots)


def test_prefix_cache_serves_the_shared_prompt(
    harness: Harness, problems: list[Problem], verifier: Any
) -> None:
    traces, _ = harness.run(DVTS(), problems, verifier, n=4, beam_width=2, max_depth=2)
    check_accounting(harness, traces)
    check_one_call_per_round(harness, traces, root_requests=2)  # 2 subtrees start at the root
    for trace in traces:
        assert len([n for n in trace.tree if n["parent"] == 0]) == 4  # 2 subtrees x M=2
    # the second round continues prompts whose prefixes the first round computed
    assert sum(t.usage.cached_prompt_tokens for t in traces) > 0


def test_tree_of_thought_keeps_b_per_depth(
    harness: Harness, problems: list[Problem], verifier: Any
) -> None:
    traces, _ = harness.run(
        TreeOfThought(), problems[:2], verifier, breadth=2, expand_k=2, max_depth=3
    )
    check_accounting(harness, traces)
    check_one_call_per_round(harness, traces)
    for trace in traces:
        for depth in (1, 2):
            expanded = {n["parent"] for n in trace.tree if n["depth"] == depth + 1}
            assert len(expanded) <= 2  # at most b states expanded per depth


def test_mcts_one_call_per_iteration(
    harness: Harness, problems: list[Problem], verifier: Any
) -> None:
    traces, _ = harness.run(
        MCTS(), problems, verifier, simulations=3, expand_k=2, max_depth=3, complete_chosen=True
    )
    check_accounting(harness, traces)
    check_one_call_per_round(harness, traces)
    priors: set[bool] = set()  # whether a node's children's priors differ
    for trace in traces:
        tree = trace.tree
        # one backed-up value per simulation (backup: leaf): the root has one visit per
        # simulation and every expanded node 1 + its children's visits
        assert tree[0]["visits"] == 3
        for node in tree:
            children = [c for c in tree if c["parent"] == node["id"] and not c.get("finish")]
            if children:
                assert node["visits"] == 1 + sum(c["visits"] for c in children)
        # PUCT priors from the step log-probs: a distribution over each node's children
        for node in tree:
            children = [c for c in tree if c["parent"] == node["id"] and not c.get("finish")]
            if len(children) > 1:
                assert sum(c.get("prior", 1.0) for c in children) == pytest.approx(1.0)
                priors.add(len({round(c["prior"], 9) for c in children}) > 1)
        expansions = [n for n in tree if any(c["parent"] == n["id"] for c in tree)]
        assert len(expansions) <= 3 + 1  # simulations, plus completing the chosen path
    assert True in priors  # the engine's log-probs, not the uniform fallback
    # the judge scored each round's new nodes in one call
    assert len(harness.judge_engine.calls) <= len(harness.engine.calls)


def test_mcts_rollouts_with_the_oracle_reward(
    harness: Harness, problems: list[Problem], verifier: Any
) -> None:
    traces, _ = harness.run(
        MCTS(),
        problems[:2],
        verifier,
        simulations=2,
        expand_k=2,
        max_depth=4,
        evaluation="rollout",
        rollout_reward="verifier",
        final_selection="majority",
        oracle=True,
    )
    check_accounting(harness, traces)
    check_one_call_per_round(harness, traces)
    assert harness.judge_engine.calls == []  # the oracle needs no scorer
    for trace in traces:
        for node in trace.tree[1:]:
            if node.get("finish") or not node["visits"]:
                continue
            assert node["reward"] in (0.0, 1.0)  # verdicts of the gold answer
            if not node["terminal"] and node.get("rollout") is not None:
                assert node.get("rollout_status") in ("correct", "incorrect", "error")


def test_mcts_greedy_rollouts_are_a_second_call_per_round(
    harness: Harness, problems: list[Problem], verifier: Any
) -> None:
    traces, _ = harness.run(
        MCTS(),
        problems[:2],
        verifier,
        simulations=2,
        expand_k=2,
        max_depth=3,
        evaluation="rollout",
        rollout_policy="greedy",
        complete_chosen=False,
        backup="children",  # a rollout from every new step
    )
    # each round: the expansion call, then one rollout call for its open new steps
    nodes = [n for t in traces for n in t.tree if n["round"] is not None]
    expected = []
    for r in sorted({n["round"] for n in nodes}):
        expected.append(
            len({(id(t), n["parent"]) for t in traces for n in t.tree if n["round"] == r})
        )
        open_steps = sum(1 for n in nodes if n["round"] == r and not n["terminal"])
        if open_steps:
            expected.append(open_steps)
    assert harness.engine.calls == expected
    assert all(n.get("rollout") is not None for n in nodes if not n["terminal"])


def test_budgets_stop_the_search(harness: Harness, problems: list[Problem], verifier: Any) -> None:
    traces, finished = harness.run(
        BeamSearch(), problems[:2], verifier, n=4, beam_width=2, max_depth=3, budget=Budget(calls=1)
    )
    assert len(finished) == 2
    assert harness.engine.calls == [2]  # one round for both problems, then the budget ends it
    for trace in traces:
        assert trace.usage.engine_calls == 1
        assert max(n["depth"] for n in trace.tree) == 1
    # a token budget: the search stops after the round that spends it
    traces, _ = harness.run(
        MCTS(),
        problems[:1],
        verifier,
        simulations=6,
        expand_k=2,
        max_depth=4,
        budget=Budget(tokens=1),
    )
    assert traces[0].usage.engine_calls == 1 and len(harness.engine.calls) == 1


def test_eval_run_folder_and_show(
    harness: Harness,
    vllm_generator: Any,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`reasoner eval` with beam search and the judge as scorer, then `reasoner show`."""
    import argparse

    from reasoner.config import EvalConfig, build_config
    from reasoner.runner import show
    from reasoner.runner.evaluate import run_eval

    out = tmp_path / "run"
    config = build_config(
        EvalConfig,
        {
            "strategy": {
                "name": "beam-search",
                "n": 2,
                "options": {"beam_width": 2, "max_depth": 2},
                "scorer": {"name": "judge", "options": {"prompt": "step_judge", "max_tokens": 16}},
            }
        },
        [
            "model.name=smollm2-135m-instruct",
            "limit=2",
            f"sampling.max_tokens={STEP_TOKENS}",
            f"data_dir={data_dir}",
            f"out={out}",
            "progress=false",
        ],
    )
    summary = run_eval(config, generator=harness.engine)
    assert summary["problems"] == 2 and summary["complete"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(row["tree"] for row in rows)
    parser = argparse.ArgumentParser()
    show.add_parser(parser.add_subparsers())
    problem_id = rows[1]["problem"]["id"]
    assert show.run(parser.parse_args(["show", str(out), "--problem", problem_id])) == 0
    printed = capsys.readouterr().out
    assert f"problem {problem_id}" in printed
    assert printed.count("score=") >= len(rows[1]["tree"]) - 1
    page = (out / "trees" / f"{problem_id}.html").read_text()
    assert page.count("<details") == len(rows[1]["tree"])
