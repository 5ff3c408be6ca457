"""Step-level search without an engine: PUCT, backup, virtual loss and selection, the tree and
its serialization, step rules, final-answer rules, option errors, and `reasoner show`'s
rendering. The search loops themselves run on the real engine in test_slow_tree_search.py."""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from reasoner.errors import ConfigError, ReasonerError
from reasoner.prompts import load_prompt
from reasoner.runner import show
from reasoner.strategies.base import StrategyConfig
from reasoner.strategies.beam_search import DVTS, BeamSearch, top_by_score
from reasoner.strategies.mcts import (
    MCTS,
    MCTSOptions,
    backup,
    best_path_end,
    puct,
    select_child,
    select_leaf,
    virtual_loss,
)
from reasoner.strategies.tot import TreeOfThought, sample_by_score
from reasoner.strategies.tree import (
    Candidate,
    Expansion,
    Node,
    ProblemSearch,
    StepEngine,
    StepOptions,
    Tree,
    pick,
)
from reasoner.types import Completion, GenerationRequest, Problem, SamplingParams

PROBLEM = Problem(id="p1", question="What is 2 + 3?", answer="5")


def config(n: int = 1, temperature: float = 0.7, **options: Any) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("math_cot"),
        SamplingParams(temperature=temperature, max_tokens=64),
        n=n,
        options=options,
    )


def expanded_root(values: list[tuple[int, float]]) -> Tree:
    """A root with one child per (visits, value_sum), each backed up as a real search would."""
    tree = Tree("\n\n")
    for visits, value_sum in values:
        child = tree.add(tree.root, f"step {len(tree.nodes)}")
        child.prior = 1.0 / len(values)
        for _ in range(visits):
            backup(tree, child, value_sum / visits)
    return tree


# -- PUCT, selection, backup ---------------------------------------------------------------


def test_puct_is_value_plus_an_exploration_bonus() -> None:
    assert puct(0.5, 0.25, 16, 3, 2.0) == pytest.approx(0.5 + 2.0 * 0.25 * 4 / 4)
    assert puct(0.5, 0.25, 16, 3, 0.0) == 0.5  # no exploration: pure value
    # the bonus shrinks as the child is visited more
    assert puct(0.0, 0.5, 9, 0, 1.0) > puct(0.0, 0.5, 9, 5, 1.0)


def test_exploration_constant_trades_value_for_less_visited_children() -> None:
    # child 1: visited 9 times at value 0.6; child 2: visited once at value 0.3
    tree = expanded_root([(9, 5.4), (1, 0.3)])
    exploit, explore = tree.nodes[1], tree.nodes[2]
    assert select_child(tree, tree.root, c_puct=0.0) is exploit
    assert select_child(tree, tree.root, c_puct=5.0) is explore
    # the crossover is where the formula puts it
    gap = exploit.value - explore.value
    bonus = 0.5 * math.sqrt(tree.root.visits) * (1 / 2 - 1 / 10)
    assert select_child(tree, tree.root, gap / bonus * 0.99) is exploit
    assert select_child(tree, tree.root, gap / bonus * 1.01) is explore


def test_backup_adds_a_visit_and_the_value_to_every_ancestor() -> None:
    tree = Tree("\n\n")
    a = tree.add(tree.root, "a")
    b = tree.add(a, "b")
    backup(tree, b, 0.75)
    backup(tree, a, 0.25)
    assert (tree.root.visits, tree.root.value_sum) == (2, 1.0)
    assert (a.visits, a.value) == (2, 0.5)
    assert (b.visits, b.value) == (1, 0.75)


def test_virtual_loss_steers_the_next_selection_and_is_undone() -> None:
    tree = expanded_root([(1, 0.5), (1, 0.5)])  # two equal unexpanded leaves
    before = [(n.visits, n.value_sum) for n in tree.nodes]
    first = select_leaf(tree, 1.0)
    virtual_loss(tree, first, 1.0)
    second = select_leaf(tree, 1.0)
    assert second is not first
    virtual_loss(tree, first, 1.0, sign=-1)
    assert [(n.visits, n.value_sum) for n in tree.nodes] == before


def test_mcts_select_takes_distinct_leaves_and_counts_terminal_visits() -> None:
    tree = expanded_root([(1, 0.9), (1, 0.1), (1, 0.5)])
    tree.nodes[1].terminal, tree.nodes[1].reward = True, 0.9
    search = ProblemSearch(PROBLEM, "", GenerationRequest(prompt=""), tree, 0.0)
    search.state.update(simulations=0)
    options = MCTSOptions(leaves_per_tree=2, simulations=20, c_puct=2.0)
    stats = (tree.nodes[2].visits, tree.nodes[3].visits)
    leaves = MCTS().select(search, options)
    # the best child is terminal: selecting it is a finished simulation, backed up at once
    assert tree.nodes[1].visits > 1
    assert leaves and all(not leaf.terminal for leaf in leaves)
    assert len({leaf.id for leaf in leaves}) == len(leaves) == 2
    assert search.state["simulations"] == tree.nodes[1].visits - 1 + len(leaves)
    assert (tree.nodes[2].visits, tree.nodes[3].visits) == stats  # virtual loss undone


def test_select_leaf_stops_at_terminal_and_unexpanded_nodes() -> None:
    tree = Tree("\n\n")
    assert select_leaf(tree, 1.0) is tree.root
    child = tree.add(tree.root, "done", terminal=True)
    backup(tree, child, 1.0)
    assert select_leaf(tree, 1.0) is child


def test_final_path_by_visits_and_by_value_can_differ() -> None:
    tree = expanded_root([(6, 3.0), (2, 1.8)])  # more visited (Q .5) vs higher valued (Q .9)
    assert best_path_end(tree, "max-visits") is tree.nodes[1]
    assert best_path_end(tree, "max-value") is tree.nodes[2]


# -- the tree ------------------------------------------------------------------------------


def test_solutions_join_steps_with_the_delimiter_and_serialize() -> None:
    tree = Tree("\n\n")
    a = tree.add(tree.root, "Two plus three.", tokens=4, round=0)
    b = tree.add(a, "The answer is \\boxed{5}.", terminal=True, tokens=7, round=1)
    assert b.solution == "Two plus three.\n\nThe answer is \\boxed{5}."
    assert tree.continuation(tree.root) == "" and tree.continuation(a) == "Two plus three.\n\n"
    assert [n.id for n in tree.path(b)] == [0, a.id, b.id]
    assert tree.path_tokens(b) == 11
    rows = json.loads(json.dumps(tree.to_dicts()))  # plain JSON, as results.jsonl stores it
    assert [(r["id"], r["parent"], r["depth"]) for r in rows] == [
        (0, None, 0),
        (1, 0, 1),
        (2, 1, 2),
    ]
    assert rows[2]["terminal"] and rows[2]["text"] == b.text and rows[1]["round"] == 0
    assert "chosen" not in rows[2]
    b.chosen = True
    assert tree.to_dicts()[2]["chosen"] is True


def make_engine(**options: Any) -> StepEngine:
    # the engine's generator is only needed to generate; these tests only build requests
    return StepEngine(None, config(), StepOptions(**options))  # type: ignore[arg-type]


def search_for(problem: Problem = PROBLEM) -> ProblemSearch:
    return ProblemSearch(problem, "<chat>", GenerationRequest(prompt="<chat>"), Tree("\n\n"), 0.0)


def test_step_requests_continue_the_rendered_prompt_and_stop_on_the_delimiter() -> None:
    engine = make_engine(step_max_tokens=32)
    search = search_for()
    a = search.tree.add(search.tree.root, "First.")
    step = engine.request(Expansion(search, a, 3))
    assert step.prompt == "<chat>First.\n\n"
    assert step.sampling.stop == ("\n\n",) and step.sampling.n == 3
    assert step.sampling.max_tokens == 32
    final = engine.request(Expansion(search, a, 1, to_end=True, temperature=0.0, purpose="x"))
    assert final.sampling.stop == () and final.sampling.max_tokens == 64
    assert final.sampling.temperature == 0.0
    # seeds depend on the problem, the node and the purpose, never on the batch
    seeds = {
        engine.request(Expansion(search, a, 3)).sampling.seed,
        engine.request(Expansion(search, a, 3, purpose="expand/pool1")).sampling.seed,
        engine.request(Expansion(search, search.tree.root, 3)).sampling.seed,
        engine.request(Expansion(search_for(Problem("p2", "q")), a, 3)).sampling.seed,
    }
    assert len(seeds) == 4
    assert engine.request(Expansion(search, a, 3)).sampling.seed == step.sampling.seed


@pytest.mark.parametrize(
    ("text", "finish", "to_end", "terminal"),
    [
        ("Add the numbers.", "stop", False, False),
        ("So the answer is \\boxed{5}.", "stop", False, True),  # an answer ends the path
        ("#### 5", "stop", False, True),
        ("   ", "stop", False, True),  # the model ended instead of writing a step
        ("A step cut by the token lim", "length", False, True),
        ("Everything to the end", "stop", True, True),
    ],
)
def test_which_steps_end_a_path(text: str, finish: str, to_end: bool, terminal: bool) -> None:
    engine = make_engine(max_depth=5)
    search = search_for()
    engine.rounds = 1
    child = engine.add_step(
        Expansion(search, search.tree.root, 1, to_end=to_end),
        Completion(text, finish, 10, 6),  # type: ignore[arg-type]
    )
    assert child.terminal is terminal
    assert child.tokens == 6 and child.round == 0 and child.depth == 1


def test_the_step_at_max_depth_is_the_last() -> None:
    engine = make_engine(max_depth=2)
    search = search_for()
    a = search.tree.add(search.tree.root, "First.")
    assert not engine.last_step(search.tree.root) and engine.last_step(a)
    child = engine.add_step(Expansion(search, a, 1), Completion("Second.", "stop", 10, 3))
    assert child.terminal and child.depth == 2


# -- choosing -------------------------------------------------------------------------------


def nodes_with_scores(scores: list[float | None]) -> list[Node]:
    tree = Tree("\n\n")
    nodes = []
    for i, score in enumerate(scores):
        node = tree.add(tree.root, f"text {i}")
        node.score = score
        nodes.append(node)
    return nodes


def test_top_by_score_ranks_failed_scores_last_and_drops_repeats() -> None:
    a, b, c, d = nodes_with_scores([0.2, None, 0.9, 0.0])
    assert top_by_score([a, b, c, d], 4) == [c, a, d, b]
    twin = Tree("\n\n").add(Tree("\n\n").root, c.text)  # another node with c's solution
    twin.score = 0.95
    assert top_by_score([c, twin, a], 2) == [twin, a]
    assert top_by_score([a, d], 1) == [a]


def test_final_answer_rules() -> None:
    nodes = nodes_with_scores([0.9, 0.2, 0.3, 0.35, None])
    candidates = [Candidate(n, n.solution, 1) for n in nodes]
    clusters = [0, 1, 1, 1, -1]  # answer classes; -1: no answer
    assert pick("max-score")(candidates, clusters) == 0
    assert pick("majority")(candidates, clusters) == 3  # class 1, by its best-scored member
    # class 1 weighs 0.85, class 0 weighs 0.9
    assert pick("weighted-majority")(candidates, clusters) == 0
    # a rollout candidate is ranked by its own value, not its node's score
    rollout = Candidate(nodes[4], "full text", 1, value=0.95)
    assert pick("max-score")([*candidates, rollout], [*clusters, 2]) == 5


def test_weighted_majority_sums_scores_per_answer() -> None:
    nodes = nodes_with_scores([0.9, 0.4, 0.3, 0.35])
    candidates = [Candidate(n, n.solution, 1) for n in nodes]
    # class 1 weighs 1.05 against class 0's 0.9: the heavier class wins, by its best member
    assert pick("weighted-majority")(candidates, [0, 1, 1, 1]) == 1
    # with no answers anywhere, every rule falls back to the best score
    for rule in ("majority", "weighted-majority"):
        assert pick(rule)(candidates, [-1, -1, -1, -1]) == 0  # type: ignore[arg-type]


def test_sampled_selection_follows_the_scores() -> None:
    strong, weak = nodes_with_scores([1.0, None])
    picks = [sample_by_score([strong, weak], 1, random.Random(seed))[0] for seed in range(200)]
    assert picks.count(strong) == 200  # an unscored node is only drawn once the rest are
    both = sample_by_score([strong, weak], 2, random.Random(0))
    assert both == [strong, weak]
    even = nodes_with_scores([0.5, 0.5])
    firsts = [sample_by_score(even, 1, random.Random(seed))[0] for seed in range(400)]
    assert 120 < firsts.count(even[0]) < 280  # both drawn, at even odds


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "cfg", "message"),
    [
        (BeamSearch(), config(4, beam_wdth=2), "unknown key 'strategy.options.beam_wdth'"),
        (BeamSearch(), config(6, beam_width=4), "multiple of strategy.options.beam_width"),
        (BeamSearch(), config(4, temperature=0.0, beam_width=2), "sampling.temperature > 0"),
        (DVTS(), config(2, beam_width=4), "multiple of strategy.options.beam_width"),
        (BeamSearch(), config(4, max_depth=0), "strategy.options.max_depth"),
        (BeamSearch(), config(4, delimiter=""), "strategy.options.delimiter"),
        (BeamSearch(), config(4, answer_pattern="(unclosed"), "not a regular expression"),
        (BeamSearch(), config(4, final_selection="vote"), "strategy.options.final_selection"),
        (TreeOfThought(), config(4), "strategy.n must be 1"),
        (TreeOfThought(), config(1, selection="best"), "strategy.options.selection"),
        (MCTS(), config(1, c_puct=-1), "strategy.options.c_puct"),
        (MCTS(), config(1, rollout_reward="verifier"), "applies to evaluation: rollout"),
        (MCTS(), config(1, temperature=0.0), "sampling.temperature > 0"),
        (MCTS(), config(1, final_selection="best"), "strategy.options.final_selection"),
    ],
)
def test_bad_options_are_named(strategy: Any, cfg: StrategyConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        strategy.validate(cfg)


def test_unknown_key_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        MCTS().validate(config(1, simulation=4))
    assert "simulations" in str(error.value) and "expand_k" in str(error.value)


def test_good_options_pass() -> None:
    BeamSearch().validate(config(8, beam_width=4, max_depth=5, delimiter="\n"))
    DVTS().validate(config(4, beam_width=2))
    TreeOfThought().validate(config(1, breadth=2, expand_k=3, selection="sample"))
    MCTS().validate(
        config(1, evaluation="rollout", rollout_policy="greedy", rollout_reward="verifier")
    )
    # one sample per node needs no temperature
    MCTS().validate(config(1, temperature=0.0, expand_k=1))


def test_strategies_without_a_scorer_refuse_to_run() -> None:
    with pytest.raises(ConfigError, match=r"needs strategy\.scorer"):
        BeamSearch().run([PROBLEM], None, None, config(2, beam_width=2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"needs strategy\.scorer"):
        MCTS().run([PROBLEM], None, None, config(1))  # type: ignore[arg-type]


# -- reasoner show --------------------------------------------------------------------------


def sample_row() -> dict[str, Any]:
    tree = Tree("\n\n")
    a = tree.add(tree.root, "Two & three <make>", tokens=4, round=0)
    a.score, a.visits, a.value_sum = 0.8, 3, 1.5
    b = tree.add(a, "The answer is \\boxed{5}.", terminal=True, tokens=5, round=1)
    b.score, b.status, b.answer, b.candidate, b.chosen = 0.9, "correct", "5", True, True
    c = tree.add(tree.root, "A wrong turn " + "x" * 300, tokens=50, round=0)
    c.score_error = "judge failed"
    return {
        "problem": {"id": "p1", "question": PROBLEM.question, "answer": "5", "metadata": {}},
        "prediction": "5",
        "verdict": {"status": "correct", "score": 1.0},
        "usage": {"prompt_tokens": 30, "cached_prompt_tokens": 10, "completion_tokens": 59},
        "steps": [],
        "tree": tree.to_dicts(),
    }


def test_show_prints_the_tree_with_scores_visits_and_the_chosen_path() -> None:
    text = show.format_tree(sample_row(), width=40)
    lines = text.splitlines()
    node_a = next(line for line in lines if "[1]" in line)
    node_b = next(line for line in lines if "[2]" in line)
    node_c = next(line for line in lines if "[3]" in line)
    assert "score=0.800" in node_a and "N=3 Q=0.500" in node_a and node_a.lstrip().startswith("*")
    assert "correct answer=5" in node_b and "CHOSEN" in node_b
    assert len(node_b) - len(node_b.lstrip()) > len(node_a) - len(node_a.lstrip())  # nested
    assert "score=error" in node_c and not node_c.lstrip().startswith("*")
    assert "x" * 40 not in node_c and "..." in node_c  # long text is cut


def test_show_html_nests_nodes_and_escapes_text() -> None:
    page = show.render_html(sample_row())
    assert page.count("<details") == page.count("</details>") == 4
    assert "Two &amp; three &lt;make&gt;" in page and "<make>" not in page
    assert "<script" not in page
    # node 2 is inside node 1's <details>
    assert page.index("[1]") < page.index("[2]") < page.index("[3]")
    # node 1 closes only after node 2, which it holds
    assert page[page.index("[1]") : page.index("[2]")].count("</details>") == 0
    assert page[page.index("[2]") : page.index("[3]")].count("</details>") == 2


def test_show_command_reads_a_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = sample_row()
    other = {**row, "problem": {**row["problem"], "id": "p2"}, "tree": []}
    (tmp_path / "results.jsonl").write_text(
        json.dumps(other) + "\n" + json.dumps(row) + "\n" + '{"torn": '
    )
    parser = argparse.ArgumentParser()
    show.add_parser(parser.add_subparsers())
    assert show.run(parser.parse_args(["show", str(tmp_path), "--problem", "p1"])) == 0
    out = capsys.readouterr().out
    assert "problem p1" in out and "[2]" in out
    page = tmp_path / "trees" / "p1.html"
    assert page.is_file() and "boxed{5}" in page.read_text()
    assert (tmp_path / "results.jsonl").read_text().endswith('{"torn": ')  # left as it was
    assert show.run(parser.parse_args(["show", str(tmp_path), "--problem", "p2"])) == 0
    assert "no search tree" in capsys.readouterr().out
    with pytest.raises(ReasonerError, match=r"no problem .p9.*p2, p1"):
        show.find_row(tmp_path, "p9")
    with pytest.raises(ReasonerError, match=r"results\.jsonl is missing"):
        show.find_row(tmp_path / "missing", "p1")


# -- rendering the chat for raw-prompt continuation -------------------------------------------


@pytest.mark.parametrize("adds_bos", [False, True])
def test_rendered_chat_tokenizes_to_the_templated_chat(
    test_model_path: Path, adds_bos: bool
) -> None:
    """A search continues `render_chat(messages) + partial answer` as a raw prompt; the
    backend's own tokenization of that text must give the chat template's tokens, with no
    BOS twice where the tokenizer adds one itself."""
    from transformers import AutoTokenizer

    from reasoner.models.base import chat_prompt_text

    tokenizer = AutoTokenizer.from_pretrained(test_model_path, add_bos_token=adds_bos)
    messages = load_prompt("math_cot").render(PROBLEM)
    expected = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=True,
        tokenize=True,
    )
    if not isinstance(expected, list):
        expected = expected["input_ids"]
    # vLLM and OpenAI-compatible servers tokenize raw prompts with special tokens
    served = chat_prompt_text(tokenizer, messages, adds_special=True)
    assert tokenizer(served)["input_ids"] == list(expected)
    # the transformers backend tokenizes without them
    local = chat_prompt_text(tokenizer, messages, adds_special=False)
    assert tokenizer(local, add_special_tokens=False)["input_ids"] == list(expected)
    assert served.endswith("<|im_start|>assistant\n") and PROBLEM.question in served


# -- sample configs ---------------------------------------------------------------------------

SEARCH_CONFIGS = {
    "gsm8k-beam-search.yaml": BeamSearch,
    "gsm8k-dvts.yaml": DVTS,
    "gsm8k-mcts.yaml": MCTS,
    "gsm8k-tree-of-thought.yaml": TreeOfThought,
}


@pytest.mark.parametrize("name", sorted(SEARCH_CONFIGS))
def test_sample_search_configs_plan(name: str, data_dir: Path) -> None:
    from reasoner.config import EvalConfig, build_config, load_yaml
    from reasoner.resources import asset_dir
    from reasoner.runner.evaluate import plan_eval

    path = asset_dir("configs") / name
    config = build_config(EvalConfig, load_yaml(path), [f"data_dir={data_dir}"], str(path))
    plan = plan_eval(config)
    assert isinstance(plan.strategy, SEARCH_CONFIGS[name])
    assert config.strategy.scorer is not None and config.strategy.scorer.name == "judge"
    assert config.strategy.scorer.options["prompt"] == "step_judge"
    # a typo in the options is named before any model loads
    typo = build_config(
        EvalConfig,
        load_yaml(path),
        [f"data_dir={data_dir}", "strategy.options.max_dept=3"],
        str(path),
    )
    with pytest.raises(ConfigError, match=r"strategy\.options\.max_dept"):
        plan_eval(typo)
