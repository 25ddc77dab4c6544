"""The optimisation levels of the export stage: which passes each runs and which runtimes its graph is for.

Importing this module imports nothing heavy (no onnx): the export and bench CLIs check a ``--optimize`` value
and name the folder of a level's export with it. The passes themselves live in ``export.optimize.driver``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LEVEL = "portable"

# The exact standard-ONNX passes of the default level, in order (export.optimize.driver names their functions).
PORTABLE_PASSES = (
    "remove_identity",
    "remove_dropout",
    "remove_neutral_elementwise",
    "fold_batchnorm",
    "static_reshape_targets",
    "collapse_reshapes",
    "merge_transposes",
    "split_patch_transposes",
    "split_qkv_projection",
)


class LevelError(ValueError):
    """An optimisation level that does not exist, or a runtime its graph is not made for."""


@dataclass(frozen=True)
class Level:
    name: str
    passes: tuple[str, ...]
    description: str
    runtimes: tuple[str, ...] | None = None  # None: standard ONNX, any runtime; else the only runtimes it runs on


LEVELS: dict[str, Level] = {
    level.name: level
    for level in (
        Level("none", (), "no passes: the folded paddle2onnx graph"),
        Level(DEFAULT_LEVEL, PORTABLE_PASSES,
              "exact standard-ONNX passes at the export's opset (Identity/Dropout, x+0 and x*1, BatchNorm "
              "folding, constant Reshape targets, Reshape chains, Transpose pairs, MobileViT's 6-D unfold/fold "
              "Transposes as cheaper steps, one MatMul per q/k/v instead of cutting one projection)"),
        Level("gemm", (*PORTABLE_PASSES, "matmul_bias_to_gemm"),
              "portable + 3-D MatMul with bias as Reshape -> Gemm -> Reshape (ONNX Runtime fuses the bias only "
              "into a 2-D GEMM); standard ONNX"),
        Level("ort", (*PORTABLE_PASSES, "ort_offline"),
              "portable + ONNX Runtime's own extended graph optimisations saved offline (com.microsoft ops): "
              "ONNX Runtime on CPU only", runtimes=("ort",)),
    )
}


def check_level(name: str) -> Level:
    """The level called ``name``, or a LevelError listing the levels."""
    if name not in LEVELS:
        raise LevelError(f"unknown optimisation level {name!r}; choose one of {', '.join(LEVELS)}")
    return LEVELS[name]


def folder_variant(level: str) -> str:
    """The suffix of a level's export folder: none for the default level (the plain folder), else ``opt-<level>``."""
    check_level(level)
    return "" if level == DEFAULT_LEVEL else f"opt-{level}"


def check_runtime(level: str, runtime: str) -> None:
    """A LevelError when the graph of ``level`` is not made for ``runtime`` (e.g. the ``ort`` graph on OpenVINO)."""
    allowed = check_level(level).runtimes
    if allowed is not None and runtime not in allowed:
        raise LevelError(f"the {level!r} optimisation level makes a graph for {', '.join(allowed)} only "
                         f"(runtime-specific ops); use --optimize {DEFAULT_LEVEL} for {runtime}")
