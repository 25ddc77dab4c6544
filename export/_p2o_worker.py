"""Runs one paddle2onnx conversion in its own process.

paddle2onnx aborts the whole process (SIGABRT) when an opset is out of range or too low for an op, so the
caller runs this module as a child and turns its messages into an error. Writes the raw (unfolded) ONNX bytes.
Usage: python -m export._p2o_worker MODEL_JSON PARAMS OPSET OUT_ONNX
"""

import sys


def main(model_file: str, params_file: str, opset: str, out_path: str) -> int:
    import paddle2onnx

    # save_file=None returns the bytes before paddle2onnx's own optional folding, which would swallow a
    # failed Polygraphy import (and, with POLYGRAPHY_AUTOINSTALL_DEPS, pip-install at run time).
    # The parent folds instead.
    # verbose=True makes paddle2onnx name the op that needs a higher opset before it aborts.
    onnx_bytes = paddle2onnx.export(
        model_file,
        params_file,
        None,
        opset_version=int(opset),
        auto_upgrade_opset=False,
        verbose=True,
        enable_onnx_checker=True,
        enable_optimize=True,
        optimize_tool="none",
    )
    if not onnx_bytes:
        print("[ERROR] paddle2onnx returned an empty model", file=sys.stderr)
        return 3
    with open(out_path, "wb") as f:
        f.write(onnx_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
