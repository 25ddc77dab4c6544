"""The CPU's instruction-set flags that decide whether reduced precision is fast, and what is missing.

int8 needs a dot-product instruction to beat fp32 (AVX512-VNNI, AVX-VNNI or AMX-INT8: without one, u8 x s8
products go through ``vpmaddubsw``, whose int16 pair sums saturate, which is also why ONNX Runtime advises
7-bit weights, ``reduce_range``, there); bf16 needs AVX512-BF16 or AMX-BF16; fp16 compute needs AVX512-FP16 or
AMX-FP16. Read from ``/proc/cpuinfo`` (Linux); elsewhere every flag reads False.

A reduced float precision asked as a runtime hint runs as the nearest format the CPU computes natively
(:func:`float_precision_run`), which decides between the three kinds of x86 CPU: no bf16 (AVX2, or AVX-512
without BF16), bf16 without fp16 (Cooper Lake, Zen 4/5: AVX512-BF16 only) and fp16 (Sapphire Rapids and later:
AVX512-FP16, AMX).
"""

from __future__ import annotations

from pathlib import Path

# Every flag recorded with a record's environment and an int8 build.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
             "amx_bf16", "amx_fp16")
# precision -> flags any one of which makes it native on the CPU
NATIVE = {
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8"),
    "bf16": ("avx512_bf16", "amx_bf16"),
    "fp16": ("avx512_fp16", "amx_fp16"),
}
# A float precision asked as a hint, then what stands in for it where the CPU lacks it: OpenVINO's CPU plugin
# runs f16 as bf16 on a CPU with bf16 but no fp16, and either as f32 on a CPU with neither.
FLOAT_STAND_INS = {"fp16": ("fp16", "bf16", "fp32"), "bf16": ("bf16", "fp32")}


def read_flags(cpuinfo: str | None = None) -> set[str]:
    """The flags of the first processor in ``cpuinfo`` (default: this machine's ``/proc/cpuinfo``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """``CPU_FLAGS`` -> present."""
    present = read_flags(cpuinfo)
    return {flag: flag in present for flag in CPU_FLAGS}


def native(precision: str, flags: dict[str, bool] | None = None) -> bool:
    """Does the CPU have an instruction that makes ``precision`` arithmetic native (int8, bf16, fp16)?"""
    flags = cpu_flags() if flags is None else flags
    return any(flags.get(flag, False) for flag in NATIVE.get(precision, ()))


def float_precision_run(asked: str, flags: dict[str, bool] | None = None) -> str:
    """The precision a CPU computes when ``asked`` (fp16 or bf16) is a hint: the first of ``asked`` and its
    stand-ins (``FLOAT_STAND_INS``) the CPU has natively; fp32, int8 and anything else: ``asked``."""
    flags = cpu_flags() if flags is None else flags
    for precision in FLOAT_STAND_INS.get(asked, ()):
        if precision == "fp32" or native(precision, flags):
            return precision
    return asked


def missing_instructions(flags: dict[str, bool] | None = None) -> dict[str, list[str]]:
    """precision -> the instructions it lacks here (empty list: native), for the printed tables."""
    flags = cpu_flags() if flags is None else flags
    return {precision: ([] if native(precision, flags) else list(names)) for precision, names in NATIVE.items()}


def describe(flags: dict[str, bool] | None = None) -> str:
    """One line: the flags present and, per reduced precision, what is missing."""
    flags = cpu_flags() if flags is None else flags
    present = [flag for flag in CPU_FLAGS if flags.get(flag)]
    parts = [f"CPU flags: {' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS)}"]
    for precision, missing in missing_instructions(flags).items():
        parts.append(f"{precision} native" if not missing else f"no {precision} instructions ({'/'.join(missing)})")
    return "; ".join(parts)
