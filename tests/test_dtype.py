"""`dtype: auto` resolved from mocked machines: CPU flags, CUDA, and what the user set."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasoner.errors import ConfigError
from reasoner.models import ModelConfig
from reasoner.models.dtype import read_cpu_flags, resolve_dtype
from reasoner.training.config import PolicySettings

AVX2_ONLY = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_vnni"}
AVX512_BF16 = AVX512_NO_BF16 | {"avx512_bf16"}
AMX = AVX2_ONLY | {"amx_tile", "amx_bf16", "amx_int8"}
NO_CUDA = (False, False)


def test_defaults_are_auto() -> None:
    assert ModelConfig().dtype == "auto"
    assert PolicySettings().dtype == "auto"


@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX512_NO_BF16])
def test_cpu_without_bf16_kernels_gets_float32(flags: frozenset[str]) -> None:
    choice = resolve_dtype("auto", cuda=NO_CUDA, cpu_flags=flags)
    assert choice.dtype == "float32"
    assert choice.device == "cpu"
    assert choice.line() == "dtype: float32 (CPU without AVX512-BF16/AMX: bf16 would be slow)"
    assert "avx512_bf16" not in choice.cpu_flags and "avx2" in choice.cpu_flags


def test_avx512_bf16_gets_bfloat16() -> None:
    choice = resolve_dtype("auto", cuda=NO_CUDA, cpu_flags=AVX512_BF16)
    assert choice.dtype == "bfloat16"
    assert "AVX512-BF16" in choice.reason
    assert "avx512_bf16" in choice.cpu_flags


def test_amx_gets_bfloat16() -> None:
    choice = resolve_dtype("auto", cuda=NO_CUDA, cpu_flags=AMX)
    assert choice.dtype == "bfloat16"
    assert "AMX-BF16" in choice.reason
    assert {"amx_bf16", "amx_tile"} <= set(choice.cpu_flags)


def test_unknown_cpu_flags_fall_back_to_float32() -> None:
    choice = resolve_dtype("auto", cuda=NO_CUDA, cpu_flags=None)
    assert choice.dtype == "float32"
    assert choice.cpu_flags == []


def test_cuda_with_bf16_gets_bfloat16_whatever_the_cpu() -> None:
    choice = resolve_dtype("auto", cuda=(True, True), cpu_flags=AVX2_ONLY)
    assert (choice.dtype, choice.device) == ("bfloat16", "cuda")


def test_cuda_without_bf16_never_gets_bf16() -> None:
    assert resolve_dtype("auto", cuda=(True, False), cpu_flags=AMX).dtype == "float16"
    assert resolve_dtype("auto", "training", cuda=(True, False), cpu_flags=AMX).dtype == "float32"


def test_float16_is_never_chosen_on_a_cpu() -> None:
    for flags in (AVX2_ONLY, AVX512_NO_BF16, AVX512_BF16, AMX, None):
        for purpose in ("inference", "training", "zo"):
            choice = resolve_dtype("auto", purpose, cuda=NO_CUDA, cpu_flags=flags)  # type: ignore[arg-type]
            assert choice.dtype in ("float32", "bfloat16")


@pytest.mark.parametrize("cuda", [NO_CUDA, (True, True)])
def test_zo_auto_is_float32_even_where_bf16_is_fast(cuda: tuple[bool, bool]) -> None:
    assert resolve_dtype("auto", "zo", cuda=cuda, cpu_flags=AMX).dtype == "float32"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_an_explicit_dtype_is_kept(dtype: str) -> None:
    for flags in (AVX2_ONLY, AMX):
        choice = resolve_dtype(dtype, cuda=NO_CUDA, cpu_flags=flags)
        assert choice.dtype == dtype
        assert choice.requested == dtype
        assert choice.reason.startswith("set in the config")


def test_explicit_bf16_on_a_cpu_without_kernels_says_it_will_be_slow() -> None:
    assert "slow" in resolve_dtype("bfloat16", cuda=NO_CUDA, cpu_flags=AVX2_ONLY).reason
    assert "slow" not in resolve_dtype("bfloat16", cuda=NO_CUDA, cpu_flags=AMX).reason


def test_unknown_dtype_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="float33"):
        resolve_dtype("float33", cuda=NO_CUDA, cpu_flags=AVX2_ONLY)


def test_read_cpu_flags_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n\n"
        "processor\t: 1\nflags\t\t: fpu sse avx2 fma\n"
    )
    assert read_cpu_flags(cpuinfo) == frozenset({"fpu", "sse", "avx2", "fma"})
    assert read_cpu_flags(tmp_path / "missing") is None
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert read_cpu_flags(tmp_path / "empty") is None


def test_choice_is_recorded_as_plain_data() -> None:
    record = resolve_dtype("auto", cuda=NO_CUDA, cpu_flags=AVX2_ONLY).as_dict()
    assert record["dtype"] == "float32"
    assert record["requested"] == "auto"
    assert record["cpu_flags"] == ["avx2"]
    assert set(record) >= {"reason", "device", "cpu_capability"}
