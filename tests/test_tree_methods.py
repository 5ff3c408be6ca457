"""The tree searches as their papers and reference code define them, pinned on a scripted
generator and a scripted scorer: search-and-learn's beam search (width N every round, the N
best completed solutions) and DVTS (each subtree's last round of children), and MCTS with
PUCT priors from the policy's step log-probs and one backed-up value per simulation."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from _scripted_generator import ScriptedGenerator

from reasoner.prompts import load_prompt
from reasoner.strategies.base import StrategyConfig
from reasoner.strategies.beam_search import DVTS, BeamSearch
from reasoner.types import (
    ChatMessage,
    Completion,
    GenerationRequest,
    Problem,
    SamplingParams,
    Trace,
    Verdict,
)
from reasoner.verifiers.base import Verifier
from reasoner.verifiers.math_answer import MathAnswerVerifier

PROBLEMS = [Problem("p1", "What is 2 + 3?", "5"), Problem("p2", "What is 4 + 4?", "8")]
SCORE = re.compile(r"\(score ([0-9.]+)\)")


class StepGenerator(ScriptedGenerator):
    """A scripted generator that renders chats to text (step-level search continues raw
    prompts) and, when a request asks for them, gives each sample the log-probs `logprob`
    assigns to its text, spread over its words."""

    def __init__(
        self,
        script: Callable[[GenerationRequest, int], list[str]],
        logprob: Callable[[str], float] | None = None,
    ) -> None:
        super().__init__(script)
        self.logprob = logprob

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(f"<{m.role}>{m.content}\n" for m in messages) + "<assistant>"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        results = super().generate(requests)
        if self.logprob is None:
            return results
        from reasoner.types import TokenLogprob

        out = []
        for request, completions in zip(requests, results, strict=True):
            if request.sampling.logprobs is None:
                out.append(completions)
                continue
            with_logprobs = []
            for c in completions:
                words = c.text.split(" ")
                each = self.logprob(c.text) / len(words)
                tokens = tuple(
                    TokenLogprob(w if i == 0 else " " + w, each) for i, w in enumerate(words)
                )
                with_logprobs.append(
                    Completion(c.text, c.finish_reason, c.prompt_tokens, len(words), tokens)
                )
            out.append(with_logprobs)
        return out


class StepScorer(Verifier):
    """Scores a partial solution by the `(score X)` tag of its last step; records each batch."""

    name = "step-scorer"
    reads_gold = False  # it reads only the completion's own tags, as a blind scorer would

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def verify(self, problem: Problem, completion: Completion) -> Verdict:
        raise AssertionError("searches must score in batches")

    def verify_batch(self, pairs: Sequence[tuple[Problem, Completion]]) -> list[Verdict]:
        self.batches.append([c.text for _, c in pairs])
        scores = [
            float(SCORE.findall(c.text)[-1]) if SCORE.search(c.text) else 0.0 for _, c in pairs
        ]
        return [Verdict("correct" if s >= 0.5 else "incorrect", s) for s in scores]


@pytest.fixture(scope="module")
def math_verifier() -> Iterator[MathAnswerVerifier]:
    verifier = MathAnswerVerifier(timeout_s=20.0, workers=1)
    yield verifier
    verifier.close()


def search_config(n: int, **options: Any) -> StrategyConfig:
    return StrategyConfig(
        load_prompt("math_cot"),
        SamplingParams(temperature=0.7, max_tokens=64),
        n=n,
        options=options,
        scorer=StepScorer(),
    )


def last_step(request: GenerationRequest) -> str:
    """The text of the node a request continues: its last step (empty at the root)."""
    assert request.prompt is not None
    body = request.prompt.split("<assistant>", 1)[1]
    steps = [s for s in body.split("\n\n") if s]
    return steps[-1] if steps else ""


def boxed(value: int, score: float) -> str:
    return rf"The answer is \boxed{{{value}}} (score {score})"


# -- beam search --------------------------------------------------------------------------

# N = 4, M = 2: round 0 leaves ONE open step (three complete at once), so search-and-learn
# duplicates it back up to N; round 1 keeps the N/M = 2 best open steps, M samples each;
# round 2 is the last step (max_depth 3), written to the end
BEAM_SCRIPT = {
    "": ["A (score 0.5)", boxed(1, 0.2), boxed(2, 0.1), boxed(3, 0.95)],
    "A (score 0.5)": ["B0 (score 0.3)", "B1 (score 0.6)", "B2 (score 0.7)", boxed(4, 0.5)],
    "B1 (score 0.6)": [boxed(5, 0.9), boxed(6, 0.8)],
    "B2 (score 0.7)": [boxed(7, 0.9), boxed(8, 0.8)],
}


def beam_script(request: GenerationRequest, call: int) -> list[str]:
    texts = BEAM_SCRIPT[last_step(request)]
    assert request.sampling.n == len(texts), (last_step(request), request.sampling.n)
    return texts


def candidate_scores(trace: Trace) -> list[float]:
    return sorted((n["score"] for n in trace.tree if n.get("candidate")), reverse=True)


def test_beam_search_keeps_n_samples_per_round_and_answers_from_the_top_n(
    math_verifier: MathAnswerVerifier,
) -> None:
    generator = StepGenerator(beam_script)
    config = search_config(4, beam_width=2, max_depth=3)
    traces = BeamSearch().run(PROBLEMS, generator, math_verifier, config)
    # one engine call per round for both problems; N = 4 samples per problem in every round
    assert len(generator.batches) == 3
    for batch in generator.batches:
        per_problem: dict[str, int] = {}
        for request in batch:
            question = "2 + 3" if "2 + 3" in (request.prompt or "") else "4 + 4"
            per_problem[question] = per_problem.get(question, 0) + request.sampling.n
        assert per_problem == {"2 + 3": 4, "4 + 4": 4}
    # round 1: the lone survivor is expanded with all N samples (duplicated up to N)
    assert [r.sampling.n for r in generator.batches[1]] == [4, 4]
    # round 2: the N/M = 2 best open steps, M = 2 samples each
    assert sorted(last_step(r) for r in generator.batches[2]) == sorted(
        ["B1 (score 0.6)", "B2 (score 0.7)"] * 2
    )
    for trace in traces:
        # 8 solutions complete (3 + 1 + 4); the candidates are the N = 4 best-scored
        assert sum(1 for n in trace.tree if n["terminal"]) == 8
        assert len(trace.steps[0].completions) == 4
        assert candidate_scores(trace) == [0.95, 0.9, 0.9, 0.8]
        assert trace.prediction == "3"  # the best-scored candidate


# -- DVTS ---------------------------------------------------------------------------------


def dvts_script() -> Callable[[GenerationRequest, int], list[str]]:
    """Subtree 0 goes three rounds deep; subtree 1 completes in round 0. Both root requests
    have the same prompt, so the subtree is told apart by the request's seed."""
    seeds: dict[int | None, int] = {}

    def script(request: GenerationRequest, call: int) -> list[str]:
        step = last_step(request)
        if step == "":
            subtree = seeds.setdefault(request.sampling.seed, len(seeds) % 2)
            return (
                ["a1 (score 0.6)", "a2 (score 0.4)"]
                if subtree == 0
                else ["b1 (score 0.3)", boxed(7, 0.9)]
            )
        return {
            "a1 (score 0.6)": ["a1x (score 0.5)", "a1y (score 0.7)"],
            "a1y (score 0.7)": [boxed(3, 0.2), boxed(4, 0.8)],
        }[step]

    return script


def test_dvts_answers_from_each_subtrees_last_round_of_children(
    math_verifier: MathAnswerVerifier,
) -> None:
    generator = StepGenerator(dvts_script())
    config = search_config(4, beam_width=2, max_depth=3)
    (trace,) = DVTS().run(PROBLEMS[:1], generator, math_verifier, config)
    assert generator.calls == [2, 1, 1]  # both subtrees, then subtree 0 alone
    texts = {n["id"]: n["text"] for n in trace.tree}
    candidates = sorted(texts[n["id"]] for n in trace.tree if n.get("candidate"))
    # subtree 0's last round (both children of a1y), subtree 1's only round (b1, and the
    # answer it stopped on): N = 4 in all; steps of earlier rounds are not candidates
    assert candidates == sorted([boxed(3, 0.2), boxed(4, 0.8), "b1 (score 0.3)", boxed(7, 0.9)])
    assert len(trace.steps[0].completions) == 4
    assert trace.prediction == "7"


# -- MCTS ---------------------------------------------------------------------------------

ROOT_STEPS = ["low1 (score 0.5)", "low2 (score 0.5)", "high (score 0.5)"]


def step_name(text: str) -> str:
    return text.split(" (", 1)[0]


def mcts_script(request: GenerationRequest, call: int) -> list[str]:
    """Three next steps of every node, with scores that differ by name and position."""
    step = last_step(request)
    if step == "":
        return ROOT_STEPS[: request.sampling.n]
    name = step_name(step)
    return [
        f"{name}.{i} (score {(len(name) * 7 + i * 3) % 10 / 10})" for i in range(request.sampling.n)
    ]


def mcts_logprob(text: str) -> float:
    """The step's total log-prob: "high" is far likelier than its siblings; deeper steps are
    likelier the smaller their index."""
    name = step_name(text)
    if name == "high":
        return -0.3
    if name.startswith("low"):
        return -6.0
    return -1.0 - int(name.rsplit(".", 1)[1])


def mcts_config(**options: Any) -> StrategyConfig:
    return search_config(1, expand_k=3, max_depth=4, complete_chosen=False, **options)


def run_mcts(
    verifier: Verifier, problems: list[Problem] = PROBLEMS, **options: Any
) -> tuple[list[Trace], StepGenerator, StrategyConfig]:
    from reasoner.strategies.mcts import MCTS

    generator = StepGenerator(mcts_script, mcts_logprob)
    config = mcts_config(**options)
    return MCTS().run(problems, generator, verifier, config), generator, config


def check_leaf_backup_visits(trace: Trace, simulations: int) -> None:
    """One value per simulation: every expanded node has N = 1 + sum of its children's N,
    an unexpanded open step N = 0, and the root N = the number of simulations."""
    tree = trace.tree
    assert tree[0]["visits"] == simulations
    for node in tree:
        children = [c for c in tree if c["parent"] == node["id"]]
        if children:
            assert node["visits"] == 1 + sum(c["visits"] for c in children), node
        elif not node["terminal"]:
            assert node["visits"] == 0, node


def test_puct_visits_the_high_prior_child_first_and_counts_one_visit_per_simulation(
    math_verifier: MathAnswerVerifier,
) -> None:
    traces, generator, config = run_mcts(math_verifier, simulations=8)
    # every expansion asks the engine for the sampled tokens' log-probs
    assert all(r.sampling.logprobs is not None for b in generator.batches for r in b)
    # round 1 expands each root; round 2 the child PUCT ranks first: all are unvisited with
    # Q = 0, so the prior decides, and "high" (listed last) has by far the highest
    assert [last_step(r) for r in generator.batches[1]] == ["high (score 0.5)"] * 2
    assert max(generator.calls) == 2 and generator.calls[0] == 2  # one call per round
    for trace in traces:
        root_children = [n for n in trace.tree if n["parent"] == 0]
        priors = {step_name(n["text"]): n["prior"] for n in root_children}
        # softmax over the siblings of the mean token log-prob (3 tokens a step): AlphaMath's
        # exp(cumulative_logprob / len(token_ids)), normalised
        high, low = math.exp(-0.3 / 3), math.exp(-6.0 / 3)
        assert priors["high"] == pytest.approx(high / (high + 2 * low))
        assert priors["low1"] == priors["low2"] == pytest.approx(low / (high + 2 * low))
        check_leaf_backup_visits(trace, simulations=8)
        # the root was not scored; each later expansion scored its leaf once
        expanded = [n for n in trace.tree[1:] if any(c["parent"] == n["id"] for c in trace.tree)]
        assert all(n.get("score") is not None for n in expanded)
    scorer = config.scorer
    assert isinstance(scorer, StepScorer)
    assert all(len(batch) <= 2 for batch in scorer.batches)  # one scorer call per round


def test_uniform_priors_fall_back_to_the_first_child(math_verifier: MathAnswerVerifier) -> None:
    _, generator, _ = run_mcts(math_verifier, PROBLEMS[:1], simulations=3, prior="uniform")
    assert all(r.sampling.logprobs is None for b in generator.batches for r in b)
    assert last_step(generator.batches[1][0]) == "low1 (score 0.5)"


def test_children_backup_gives_a_parent_k_visits_per_expansion(
    math_verifier: MathAnswerVerifier,
) -> None:
    (trace,), _, _ = run_mcts(math_verifier, PROBLEMS[:1], simulations=4, backup="children")
    tree = trace.tree
    # every new step was valued and backed up once, so the root holds one visit per step
    assert tree[0]["visits"] == len(tree) - 1
    for node in tree[1:]:
        children = [c for c in tree if c["parent"] == node["id"]]
        assert node["visits"] == 1 + sum(c["visits"] for c in children)


def test_mean_and_sum_priors_and_their_temperature() -> None:
    from reasoner.strategies.mcts import softmax_priors, step_logprob
    from reasoner.types import TokenLogprob

    short = Completion("a", "stop", 0, 1, (TokenLogprob("a", -1.0),))
    long = Completion("b c d", "stop", 0, 3, tuple(TokenLogprob(t, -0.5) for t in "bcd"))
    # per token the long step is likelier; as a whole sequence, the short one
    assert step_logprob(long, "mean") > step_logprob(short, "mean")  # type: ignore[operator]
    assert step_logprob(long, "sum") < step_logprob(short, "sum")  # type: ignore[operator]
    assert step_logprob(long, "sum", chars=2) == -1.0  # only the tokens writing "bc"
    assert step_logprob(Completion("x", "stop", 0, 1), "mean") is None
    sharp, flat = softmax_priors([-0.5, -1.0], 0.5), softmax_priors([-0.5, -1.0], 5.0)
    assert sharp[0] > flat[0] > 0.5 and sum(flat) == pytest.approx(1.0)
