"""Prompt/completion records as token batches, the language-model loss on them, and a batch
order that is a function of the step alone (so a resumed run sees the batches an uninterrupted
run would have seen).

Used where TRL's trainers are not: the zeroth-order stage, held-out losses and the memory
benchmark. Tokenised as TRL does: the prompt with the chat template's generation prompt, the
prompt+completion conversation in full, and the loss on the tokens after their common prefix.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reasoner.training.data import Record

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return str(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=False
        )
    )


def tokenize_records(
    records: Sequence[Record], tokenizer: Any, max_length: int, completion_only: bool = True
) -> list[Example]:
    examples = []
    for record in records:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, str):
            prompt_ids = _ids(tokenizer, prompt)
            full_ids = _ids(tokenizer, prompt + str(completion))
        else:
            prompt_ids = _ids(tokenizer, _render(tokenizer, list(prompt), True))
            full_ids = _ids(tokenizer, _render(tokenizer, list(prompt) + list(completion), False))
        shared = 0
        for a, b in zip(prompt_ids, full_ids, strict=False):
            if a != b:
                break
            shared += 1
        labels = ([IGNORE] * shared if completion_only else full_ids[:shared]) + full_ids[shared:]
        examples.append(Example(full_ids[:max_length], labels[:max_length]))
    return examples


def collate(examples: Sequence[Example], pad_id: int, device: Any = None) -> dict[str, Any]:
    """Right-padded tensors; padding is masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def lm_loss(model: Any, batch: dict[str, Any]) -> float:
    """Mean loss per completion token over the batch, without building a graph."""
    import torch

    with torch.no_grad():
        return float(model(**batch).loss)


def mean_loss(
    model: Any, examples: Sequence[Example], pad_id: int, batch_size: int, device: Any = None
) -> float:
    """Loss per completion token over a whole held-out set (token-weighted, not batch-averaged)."""
    import torch

    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = collate(chunk, pad_id, device)
            count = int((batch["labels"][:, 1:] != IGNORE).sum())
            total += float(model(**batch).loss) * count
            tokens += count
    return total / max(tokens, 1)


@functools.lru_cache(maxsize=4)
def _epoch_order(size: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(size))
    random.Random(f"{seed}:epoch:{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(size: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Record indices for 1-based `step`: a seeded shuffle per epoch, epochs laid end to end."""
    position = (step - 1) * batch_size
    out = []
    for offset in range(batch_size):
        epoch, index = divmod(position + offset, size)
        out.append(_epoch_order(size, seed, epoch)[index])
    return out
