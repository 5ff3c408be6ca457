"""Any Verifier as a TRL reward function: `f(prompts, completions, **columns) -> list[float|None]`.

A verifier `error` becomes None, which TRL treats as "no reward for this sample" instead of a
zero that would teach the policy that a correct answer was wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reasoner.types import Completion, Problem
from reasoner.verifiers.base import Verifier

RewardFn = Callable[..., list[float | None]]


def _text(value: Any) -> str:
    """TRL passes plain strings, or chats (lists of {"role", "content"}) in conversational mode."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return str(value)


def as_reward_fn(verifier: Verifier, answer_column: str = "answer") -> RewardFn:
    def reward(
        prompts: Sequence[Any], completions: Sequence[Any], **columns: Sequence[Any]
    ) -> list[float | None]:
        if answer_column not in columns:
            raise KeyError(
                f"reward function of verifier {verifier.name!r} needs the dataset column "
                f"{answer_column!r}; columns passed: {sorted(columns)}"
            )
        pairs = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            metadata = {k: v[i] for k, v in columns.items() if k != answer_column and len(v) > i}
            answer = columns[answer_column][i]
            problem = Problem(
                id=str(i),
                question=_text(prompt),
                answer=None if answer is None else str(answer),
                metadata=metadata,
            )
            pairs.append((problem, Completion(_text(completion), "stop", 0, 0)))
        verdicts = verifier.verify_batch(pairs)
        return [None if v.status == "error" else v.score for v in verdicts]

    reward.__name__ = f"{verifier.name.replace('-', '_')}_reward"
    return reward
