"""The speed targets the benchmark scripts print, and how each is judged (issue 24, on top of the earlier ones).

A target is judged only on a CPU that has the instructions its figure needs; elsewhere it is printed as "not
judged" with the missing instructions, beside the measured figure. The figures come from one run of the script
(interleaved rounds, the same threads for every runtime); each verdict names the figure it read.

- int8 against fp32 (``precision_speedup.py``): ONNX Runtime int8 <= 0.75x fp32 at batch 8 on every model and
  never slower than fp32 at batch 1; OpenVINO int8 <= 0.6x at batch 8 (MobileViT: issue 24; LeViT: before it);
  OpenVINO bf16 <= 0.7x at batch 8 on AMX. int8 needs VNNI or AMX-INT8. On a CPU without them, ONNX Runtime's
  int8 is judged by its profile instead: the float islands (Quantize/DequantizeLinear and the float ops between
  them: kept-float heads, Softmax, normalisations) at most 10 % of the int8 run.
- fp32 graphs (``graph_speedup.py``): MobileViT at batch 8 on the faster runtime at >= 70 % of the sgemm peak
  read in the same run; no LeViT model slower after the graph passes than its A/A control's noise allows; the
  best fp32 configuration >= 6x Paddle Inference fp32 (oneDNN, IR optimisation, the same threads) at batch 1.
"""

from __future__ import annotations

from typing import NamedTuple

from core.cpu import native
from export.quantize.census import float_ops


class RatioTarget(NamedTuple):
    """A reduced-precision latency ratio to the same runtime's fp32: at most ``limit`` at ``batch``."""

    runtime: str
    precision: str
    batch: int
    limit: float
    family: str | None = None  # None: every model
    needs: str = "int8"  # the instructions: "int8" (VNNI/AMX-INT8) or "amx_bf16"

    def applies(self, runtime: str, precision: str, batch: int, family: str | None) -> bool:
        return (runtime, precision, batch) == (self.runtime, self.precision, self.batch) and \
            self.family in (None, family)


PRECISION_TARGETS = (
    RatioTarget("ort", "int8", 8, 0.75),
    RatioTarget("ort", "int8", 1, 1.0),  # never slower than fp32
    RatioTarget("ov", "int8", 8, 0.6, "MobileViT"),
    RatioTarget("ov", "int8", 8, 0.6, "LeViT"),
    RatioTarget("ov", "bf16", 8, 0.7, needs="amx_bf16"),
)
NEEDS_NAME = {"int8": "VNNI/AMX-INT8", "amx_bf16": "AMX-BF16"}
FLOAT_ISLAND_LIMIT = 0.10  # share of ONNX Runtime's int8 run, judged on CPUs without an int8 dot product
GEMM_SHARE_TARGET = 0.70  # MobileViT fp32 at batch 8 on the faster runtime, of the sgemm peak
PADDLE_RATIO_TARGET = 6.0  # Paddle Inference fp32 latency / the best fp32 configuration's, batch 1


def has_instructions(need: str, flags: dict[str, bool]) -> bool:
    return native(need, flags) if need in ("int8", "bf16", "fp16") else bool(flags.get(need, False))


def ratio_verdict(runtime: str, precision: str, batch: int, family: str | None, ratio: float | None,
                  flags: dict[str, bool]) -> str:
    """The verdict on one cell's ratio to fp32 ("" when no target applies)."""
    targets = [t for t in PRECISION_TARGETS if t.applies(runtime, precision, batch, family)]
    if not targets or ratio is None:
        return ""
    target = targets[0]
    if not has_instructions(target.needs, flags):
        return f"target <= {target.limit}x not judged (no {NEEDS_NAME[target.needs]})"
    return f"target <= {target.limit}x: {'met' if ratio <= target.limit else 'MISSED'}"


def float_island_share(op_ms: dict[str, float]) -> tuple[float, dict[str, float]]:
    """(share of the run, ms per op type) of the float islands in a profile of an int8 ONNX Runtime run:
    every op that neither computes in int8 nor only moves data (Quantize/DequantizeLinear included)."""
    total = sum(op_ms.values())
    islands = {op: op_ms[op] for op in float_ops(op_ms)}
    return (sum(islands.values()) / total if total else 0.0), islands


def island_verdict(share: float, flags: dict[str, bool]) -> str:
    """Judged where the CPU lacks an int8 dot product (there the ratio to fp32 is not judged)."""
    if native("int8", flags):
        return f"float islands {share:.0%} (target <= {FLOAT_ISLAND_LIMIT:.0%} applies without VNNI; " \
               "this CPU has it: the ratios are judged)"
    return f"float islands {share:.0%}: target <= {FLOAT_ISLAND_LIMIT:.0%} " \
           f"{'met' if share <= FLOAT_ISLAND_LIMIT else 'MISSED'}"


def gemm_share_verdict(family: str | None, share: float) -> str:
    """MobileViT's share of the sgemm peak at batch 8 (fp32 needs no special instructions: always judged)."""
    if family != "MobileViT":
        return ""
    return f">= {GEMM_SHARE_TARGET:.0%}: {'met' if share >= GEMM_SHARE_TARGET else 'MISSED'}"


def noise_verdict(family: str | None, ratio: float, aa_hi: float) -> str:
    """LeViT after the graph passes: no slower than the A/A control's highest round allows."""
    if family != "LeViT":
        return ""
    return f"no loss beyond noise (<= A/A {aa_hi:.3f}): {'met' if ratio <= max(aa_hi, 1.0) else 'MISSED'}"


def paddle_verdict(ratio: float, paddle_effective: dict) -> str:
    """Paddle Inference / best fp32 at batch 1, judged only when Paddle ran with oneDNN and IR optimisation."""
    missing = [name for name in ("onednn", "ir_optim") if not paddle_effective.get(name)]
    if missing:
        return f"target >= {PADDLE_RATIO_TARGET:g}x not judged (Paddle ran without {', '.join(missing)})"
    return f"target >= {PADDLE_RATIO_TARGET:g}x: {'met' if ratio >= PADDLE_RATIO_TARGET else 'MISSED'}"


def paddle_ceiling_note(ceiling: float | None, fma_ceiling: float | None = None) -> str:
    """What the ceilings (Paddle's time over one image's GEMM work at the sgemm peak, and at the CPU's FMA peak
    when it was measured) say of the target. Only the FMA ceiling bounds every kernel that does the graph's
    multiply-adds in fp32, a better BLAS included."""
    if ceiling is None:
        return ""
    if fma_ceiling is not None and fma_ceiling < PADDLE_RATIO_TARGET:
        return (f"out of reach on this CPU: even with every multiply-add of the graph at its FMA peak "
                f"{fma_ceiling:.1f}x (only fewer multiply-adds, e.g. Winograd convolutions, could pass it)")
    if ceiling < PADDLE_RATIO_TARGET:
        return f"out of reach for an exact fp32 graph here: even at the sgemm peak {ceiling:.1f}x"
    return f"reachable in principle (ceiling {ceiling:.1f}x)"
