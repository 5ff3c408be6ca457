"""`dtype: auto`: the weight dtype chosen from the machine the run lands on.

bfloat16 halves memory and is what models are trained in, but a CPU without native bf16
instructions (AVX512-BF16 or AMX) has no fast bf16 kernels: on a 2-core AVX2-only EPYC, 32 GSM8K
problems took 113 s in float32 and had not finished a third of them after 9.5 minutes in bfloat16
(issue 16). So "auto" means bfloat16 on CUDA GPUs that support it and on CPUs that report
AVX512-BF16 or AMX, float32 everywhere else. float16 is never chosen on a CPU (no fast kernels
there either, and a narrower range than bf16). Training in zeroth order (ZO) always resolves to
float32: its +eps/-eps perturbation is below bf16's resolution for most weights.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from reasoner.errors import ConfigError

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
#: what a training stage loads the policy for: ZO perturbs weights by 1e-3, which bf16 rounds away
Purpose = Literal["inference", "training", "zo"]
#: the /proc/cpuinfo flags that mean native bf16 matmuls (AVX512-BF16; AMX tiles with bf16)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: the flags recorded in the manifest: enough to tell which kernels the CPU could use
RECORDED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
NO_BF16_REASON = "CPU without AVX512-BF16/AMX: bf16 would be slow"


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype, why it was chosen, and what it was chosen from."""

    dtype: str  # float32 | bfloat16 | float16: what the engine is given
    requested: str  # what the config said ("auto" or a dtype)
    reason: str
    device: str  # "cuda" or "cpu"
    cpu_flags: list[str] = field(default_factory=list)  # of RECORDED_CPU_FLAGS, those present
    cpu_capability: str | None = None  # torch.backends.cpu.get_cpu_capability()

    def line(self) -> str:
        """The one line the terminal shows, e.g. `dtype: float32 (CPU without ...)`."""
        return f"dtype: {self.dtype} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The x86 feature flags of the first CPU in /proc/cpuinfo; None where there is no such file
    (macOS, Windows) or it lists none, so the caller can fall back conservatively."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


@functools.cache
def _machine_cpu_flags() -> frozenset[str] | None:
    return read_cpu_flags() if platform.system() == "Linux" else None


def _cuda_bf16() -> tuple[bool, bool]:
    """(a CUDA GPU is there, it supports bf16)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False, False
    if not torch.cuda.is_available():
        return False, False
    return True, bool(torch.cuda.is_bf16_supported())


def _cpu_capability() -> str | None:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):  # pragma: no cover - torch < 2.1
        return None


def check_dtype(dtype: str, where: str = "model.dtype") -> str:
    """`dtype` if it is one reasoner knows, else a ConfigError naming the field."""
    if dtype not in DTYPES:
        raise ConfigError(f"{where}: {dtype!r} is not one of {', '.join(DTYPES)}")
    return dtype


def resolve_dtype(
    requested: str = "auto",
    purpose: Purpose = "inference",
    *,
    cuda: tuple[bool, bool] | None = None,
    cpu_flags: frozenset[str] | Literal["machine"] | None = "machine",
) -> DtypeChoice:
    """The dtype to load weights in. `cuda` ((available, bf16 supported)) and `cpu_flags` are
    read from this machine unless given (tests pass them). An explicit dtype is kept, with a
    warning in its reason when it is bf16 on a CPU that has no bf16 kernels."""
    check_dtype(requested)
    has_cuda, cuda_bf16 = _cuda_bf16() if cuda is None else cuda
    flags = _machine_cpu_flags() if cpu_flags == "machine" else cpu_flags
    recorded = sorted(f for f in RECORDED_CPU_FLAGS if flags and f in flags)
    cpu_bf16 = bool(flags) and any(f in flags for f in BF16_CPU_FLAGS)  # type: ignore[operator]
    device = "cuda" if has_cuda else "cpu"

    def choice(dtype: str, reason: str) -> DtypeChoice:
        return DtypeChoice(dtype, requested, reason, device, recorded, _cpu_capability())

    if requested != "auto":
        slow = requested in ("bfloat16", "float16") and not has_cuda and not cpu_bf16
        if requested == "bfloat16" and slow:
            return choice(requested, f"set in the config; {NO_BF16_REASON}")
        if requested == "float16" and not has_cuda:
            return choice(requested, "set in the config; CPUs have no fast float16 kernels")
        return choice(requested, "set in the config")
    if purpose == "zo":
        return choice("float32", "zeroth-order training: eps perturbations need float32")
    if has_cuda:
        if cuda_bf16:
            return choice("bfloat16", "CUDA GPU with bf16 support")
        if purpose == "training":
            return choice("float32", "CUDA GPU without bf16: float32 for stable training")
        return choice("float16", "CUDA GPU without bf16 support")
    if flags is None:
        return choice("float32", "CPU flags unknown on this OS: float32 is the safe choice")
    if cpu_bf16:
        present = "/".join(
            f.upper().replace("_BF16", "-BF16") for f in BF16_CPU_FLAGS if f in flags
        )
        return choice("bfloat16", f"CPU with {present}")
    return choice("float32", NO_BF16_REASON)
