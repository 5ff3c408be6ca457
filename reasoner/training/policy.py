"""Loading the policy to train (base model, tokenizer, LoRA) and recording what it was."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.errors import ModelError
from reasoner.models.dtype import DtypeChoice, Purpose, resolve_dtype
from reasoner.models.resolve import ResolvedModel, resolve_model
from reasoner.runner.manifest import git_commit, hardware, model_record, package_versions
from reasoner.training.config import LoraSettings, PolicySettings
from reasoner.training.data import Record, records_sha256

logger = logging.getLogger(__name__)

ENV_PREFIXES = ("OMP_", "MKL_", "CUDA_VISIBLE_DEVICES", "REASONER_", "PYTORCH_")


@dataclass
class Policy:
    model: Any  # a transformers PreTrainedModel, or a PeftModel around one
    tokenizer: Any
    resolved: ResolvedModel
    dtype: DtypeChoice  # what `settings.dtype` resolved to on this machine, and why


def use_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def lora_config(settings: LoraSettings, task_type: str = "CAUSAL_LM") -> Any:
    """PEFT's LoRA; a SEQ_CLS task also trains (and saves) the new classification head."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type=task_type,
    )


def load_policy(
    settings: PolicySettings, trainable_adapter: bool = True, purpose: Purpose = "training"
) -> Policy:
    """The base model in `settings.dtype` (on the GPU when there is one) with, if
    `settings.adapter` names one, that adapter loaded trainable on top. `auto` resolves as for
    the engine (bf16 only where the GPU or CPU has bf16 kernels), and to float32 for ZO."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(settings.name)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = resolve_dtype(settings.dtype, purpose)
    logger.info("%s", dtype.line())
    model: Any = AutoModelForCausalLM.from_pretrained(
        resolved.path, dtype=getattr(torch, dtype.dtype)
    )
    if use_cuda():
        model = model.to("cuda")
    if settings.adapter is not None:
        from peft import PeftModel

        if not (Path(settings.adapter) / "adapter_config.json").is_file():
            raise ModelError(f"model.adapter {settings.adapter}: not a PEFT adapter folder")
        model = PeftModel.from_pretrained(model, settings.adapter, is_trainable=trainable_adapter)
    return Policy(model, tokenizer, resolved, dtype)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def adapter_sha256(folder: str | Path) -> str | None:
    weights = Path(folder) / "adapter_model.safetensors"
    return file_sha256(weights) if weights.is_file() else None


def training_manifest(
    stage: str,
    policy: Policy,
    settings: PolicySettings,
    records: Sequence[Record],
    eval_records: Sequence[Record] | None,
    data_source: dict[str, Any] | None,
    seed: int,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "stage": stage,
        "reasoner_commit": git_commit(),
        "packages": package_versions(),
        "base_model": model_record(policy.resolved, f"transformers:{policy.resolved.path}"),
        "init_adapter": None
        if settings.adapter is None
        else {"path": settings.adapter, "sha256": adapter_sha256(settings.adapter)},
        "data": {
            "source": data_source,
            "records": len(records),
            "sha256": records_sha256(records),
        },
        "seed": seed,
        "dtype": policy.dtype.as_dict(),
        "hardware": hardware(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
    }
    if eval_records is not None:
        manifest["eval_data"] = {
            "records": len(eval_records),
            "sha256": records_sha256(eval_records),
        }
    return manifest
