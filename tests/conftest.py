"""Shared fixtures: a tiny real Paddle model exported to ONNX, with a manifest like the export stage's."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_44 = ROOT / "data" / "imagenet-val-44"


def run_module(module: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m module args`` from ``cwd``, seeing only this checkout (no user site, no other cwd)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def _tiny_paddle_model(out_dir: Path, size: int, classes: int) -> tuple[Path, Path]:
    import paddle

    class Tiny(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 8, 3, stride=2)
            self.act = paddle.nn.Hardswish()
            self.pool = paddle.nn.AdaptiveAvgPool2D(1)
            self.fc = paddle.nn.Linear(8, classes)

        def forward(self, x):
            return self.fc(self.pool(self.act(self.conv(x))).flatten(1))

    paddle.seed(0)
    model = Tiny()
    model.eval()
    spec = [paddle.static.InputSpec([None, 3, size, size], "float32", "x")]
    paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), str(out_dir / "inference"))
    return out_dir / "inference.json", out_dir / "inference.pdiparams"


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A 32x32, 10-class conv net: Paddle inference model + ONNX (opset 13) + manifest; returns its path."""
    import onnx
    import paddle2onnx

    logging.getLogger("paddle2onnx").setLevel(logging.WARNING)
    out = tmp_path_factory.mktemp("tiny")
    model_file, params_file = _tiny_paddle_model(out, size=32, classes=10)
    onnx_bytes = paddle2onnx.export(
        str(model_file),
        str(params_file),
        None,
        opset_version=13,
        auto_upgrade_opset=False,
        optimize_tool="none",
    )
    onnx_path = out / "model.onnx"
    onnx_path.write_bytes(onnx_bytes)
    graph = onnx.load(str(onnx_path)).graph
    manifest = {
        "schema_version": 1,
        "model": "Tiny",
        "family": "test",
        "opset": {"requested": 13, "written": 13},
        "onnx": {
            "file": "model.onnx",
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "inputs": [{"name": graph.input[0].name, "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
            "outputs": [{"name": graph.output[0].name, "shape": ["batch", 10], "dtype": "float32"}],
        },
        "paddle_model": {"model_file": model_file.name, "params_file": params_file.name},
        "preprocess": None,
    }
    path = out / "model.onnx.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


@pytest.fixture
def seeded_batch():
    def make(batch: int, size: int = 32) -> np.ndarray:
        return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)

    return make
