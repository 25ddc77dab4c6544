"""Paddle -> inference model -> ONNX at exactly the opset asked, with constants folded.

The only module that imports paddle or paddle2onnx (lazily, inside functions).
"""

from __future__ import annotations

import logging
import os
import re
import signal
from pathlib import Path

from core.proc import python_module, run_child, signals_held_for_import

log = logging.getLogger(__name__)

# paddle2onnx 2.1.0 accepts opsets 7..21 and aborts the process outside that range.
MIN_OPSET, MAX_OPSET = 7, 21
INPUT_NAME = "x"


class ExportError(RuntimeError):
    """The export failed; the message says why and what to do."""


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset {opset} is outside what paddle2onnx 2.1.0 writes ({MIN_OPSET}..{MAX_OPSET}); "
            f"pass --opset between {MIN_OPSET} and {MAX_OPSET}"
        )


def import_paddle():
    """Import paddle with SIGTERM/SIGINT held until Python's handlers are back (see
    :func:`core.proc.signals_held_for_import`): an interrupted export still removes its temporary folder."""
    with signals_held_for_import():
        import paddle
    return paddle


def inference_model_from_layer(model, input_size: int, batch: int | None, out_dir: Path) -> tuple[Path, Path]:
    """Save ``model`` (eval mode) as a Paddle inference model; ``batch=None`` keeps the batch dynamic."""
    paddle = import_paddle()

    spec = [
        paddle.static.InputSpec([batch if batch else None, 3, input_size, input_size], "float32", INPUT_NAME)
    ]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    prefix = out_dir / "inference"
    paddle.jit.save(static, str(prefix))
    model_file, params_file = prefix.with_suffix(".json"), prefix.with_suffix(".pdiparams")
    if not model_file.is_file():
        raise ExportError(f"paddle.jit.save wrote no {model_file.name}; is PIR enabled in this paddle build?")
    return model_file, params_file


def onnx_from_paddle(
    model_file: Path, params_file: Path, opset: int, out_path: Path, timeout_s: float = 900
) -> None:
    """Convert with ``auto_upgrade_opset=False`` in a child process; a refusal becomes an ExportError."""
    check_opset(opset)
    cmd = python_module("export._p2o_worker", str(model_file), str(params_file), str(opset), str(out_path))
    child = run_child(cmd, timeout_s)
    if child.timed_out:
        out_path.unlink(missing_ok=True)
        raise ExportError(f"paddle2onnx did not finish within {timeout_s:.0f} s at opset {opset}")
    if child.returncode != 0 or not out_path.is_file() or out_path.stat().st_size == 0:
        out_path.unlink(missing_ok=True)
        raise ExportError(_explain_failure(child.returncode, child.stdout + child.stderr, opset))


def _explain_failure(returncode: int, output: str, opset: int) -> str:
    needs = dict(re.findall(r"Due to the operator: (\S+) requires opset_version >= (\d+)", output))
    if needs:
        ops = ", ".join(
            f"{op} needs opset {n}" for op, n in sorted(needs.items(), key=lambda kv: -int(kv[1]))
        )
        highest = max(int(n) for n in needs.values())
        return f"paddle2onnx cannot write opset {opset}: {ops}; pass --opset {highest} or higher"
    errors = [
        line.replace("[Paddle2ONNX]", "").strip()
        for line in output.splitlines()
        if "[ERROR]" in line or "not supported" in line
    ]
    how = "aborted (SIGABRT)" if returncode in (-signal.SIGABRT, 134) else f"exit {returncode}"
    detail = "; ".join(dict.fromkeys(errors)) or output.strip()[-300:]
    return f"paddle2onnx failed at opset {opset} ({how}): {detail}"


def fold_constants(model):
    """Fold constant subgraphs with Polygraphy + ONNX Runtime; a fold that cannot run is an error.

    paddle2onnx skips folding with only a warning when Polygraphy fails to import, which left LeViT_128S with
    11,238 nodes instead of about 1,500. Here that is an ExportError, never a silent degrade.
    """
    os.environ["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"  # never pip-install at run time
    try:
        from polygraphy.backend.onnx import fold_constants as polygraphy_fold
        from polygraphy.logger import G_LOGGER

        G_LOGGER.module_severity = G_LOGGER.ERROR
    except Exception as exc:  # an ABI clash surfaces as many exception types
        raise ExportError(
            f"constant folding unavailable (polygraphy import failed: {exc}); pip install -e .[export]"
        ) from None
    try:
        folded = polygraphy_fold(model, error_ok=False)
    except Exception as exc:
        raise ExportError(f"constant folding failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    name_dynamic_batch(folded)
    left = constant_only_nodes(folded)
    if left:
        raise ExportError(
            f"constant folding left {len(left)} foldable nodes ({', '.join(sorted(set(left)))})"
        )
    return folded


def name_dynamic_batch(model) -> None:
    """Name the symbolic first dimension of inputs and outputs ``batch`` (paddle2onnx: DynamicDimension.0)."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].dim_param = "batch"


def constant_only_nodes(model) -> list[str]:
    """Op types of nodes whose every input is a constant: work that folding should have removed."""
    constants = {init.name for init in model.graph.initializer}
    leftovers = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        inputs = [name for name in node.input if name]
        if inputs and all(name in constants for name in inputs):
            leftovers.append(node.op_type)
            constants.update(node.output)
    return leftovers
