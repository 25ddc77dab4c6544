"""Shared fixtures.

Two tiers (README, "Tests"): the fast tier needs no paddle and no export: ``onnx_artifact`` is a tiny conv
net written with ``onnx.helper`` and described by a real manifest, enough for the harness, the runtimes,
the CLI and the sweep. The full tier (``@pytest.mark.slow``) adds ``tiny_artifact``, a real Paddle model
converted by paddle2onnx with its Paddle inference files, and the exports of zoo models.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.files import sha256_of
from core.manifest import MANIFEST_NAME, Manifest, ModelFile, TensorSpec, save_manifest

ROOT = Path(__file__).resolve().parents[1]
DATA_44 = ROOT / "data" / "imagenet-val-44"


# A shell starting the suite in the background without job control (`cmd &` in a script, nohup) has SIGINT
# ignored, and every process the tests start would inherit that: the Ctrl-C tests would then see no Ctrl-C at all.
# A handler here is reset to the default by exec, so the children get a Ctrl-C that works.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("slow_timeout", "seconds a @pytest.mark.slow or @pytest.mark.gpu test may run (pytest-timeout's "
                                  "`timeout` is the fast tier's)", default="900")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tier's limit (pyproject's ``slow_timeout``) on its tests and on GPU tests (engine builds, CUDA
    start-up), unless a test or the command line (``--timeout``) sets its own."""
    if config.getoption("timeout", None) is not None:
        return
    slow = pytest.mark.timeout(float(config.getini("slow_timeout")))
    for item in items:
        heavy = item.get_closest_marker("slow") or item.get_closest_marker("gpu")
        if heavy and not item.get_closest_marker("timeout"):
            item.add_marker(slow)


# What running the tool from the checkout writes by default, and the source tree (bytecode caches aside); a test
# must never touch them (it works in tmp).
CHECKOUT_OUTPUTS = (ROOT / "artifacts", ROOT / "results" / "runs.jsonl", ROOT / "results" / "report")
SOURCE_TREE = tuple(ROOT / folder for folder in ("core", "export", "runtimes", "bench", "tests", "benchmarks"))


def _state(path: Path, files_only: bool = False):
    """What is at ``path``: a file's size and time, a folder's entries with their times (its files only with
    ``files_only``: importing a module makes a __pycache__ folder, which changes its parent's time)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size, path.stat().st_mtime_ns
    return sorted((p.relative_to(path).as_posix(), p.stat().st_mtime_ns) for p in path.rglob("*")
                  if "__pycache__" not in p.parts and (p.is_file() or not files_only))


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_untouched():
    """Fails the session (an error at the last test's teardown) when a test wrote into the checkout's
    ``artifacts/``, default results or source tree: a test run must not change what the user exported or
    measured, nor the code it tests."""
    watched = {**{path: False for path in CHECKOUT_OUTPUTS}, **{path: True for path in SOURCE_TREE}}
    before = {path: _state(path, files_only) for path, files_only in watched.items()}
    yield
    changed = [str(path.relative_to(ROOT)) for path, files_only in watched.items()
               if _state(path, files_only) != before[path]]
    assert not changed, f"tests wrote into the checkout: {', '.join(changed)}"


def run_module(module: str, *args: str, cwd: Path, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m module args`` from ``cwd``, seeing only this checkout (no user site, no other cwd)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd),
             **(env or {})},
    )


def call_main(main, capsys, *argv: str) -> tuple[int, str, str]:
    """A command's ``main`` run in this process (no interpreter start): its exit code, stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_in_terminal(cmd: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``cmd`` with stderr (and stdin) on a pseudo-terminal, stdout on a pipe, as a person's shell would show
    progress; returns (exit code, everything written to the terminal)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # 40 rows, 100 columns
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=terminal, stdout=subprocess.DEVNULL, stderr=terminal,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        try:
            data = os.read(main, 65536) if ready else b""
        except OSError:  # the terminal closed: every process holding it has exited
            break
        chunks.append(data)
        if not data and proc.poll() is not None:
            break
    os.close(main)
    try:
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return code, b"".join(chunks).decode(errors="replace")


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` imported as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tiny_onnx(path: Path, size: int = 32, classes: int = 10, opset: int = 13, seed: int = 0) -> Path:
    """Conv(3->8, 3x3, stride 2) -> HardSigmoid*x -> GlobalAveragePool -> Flatten -> Gemm, dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "conv.b"),
        numpy_helper.from_array((rng.standard_normal((classes, 8)) * 0.5).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32) * 0.1, "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["conv"], strides=[2, 2], name="conv"),
        helper.make_node("HardSigmoid", ["conv"], ["gate"], alpha=1 / 6, beta=0.5, name="gate"),
        helper.make_node("Mul", ["conv", "gate"], ["act"], name="act"),
        helper.make_node("GlobalAveragePool", ["act"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1, name="flat"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def write_manifest(folder: Path, model_file: str = "model.onnx", *, name: str = "Tiny", size: int = 32,
                   classes: int = 10, opset: int = 13, input_name: str = "x", output_name: str = "logits",
                   paddle_model: dict | None = None, **fields) -> Path:
    """A real (schema-checked) manifest for a model file in ``folder``."""
    path = folder / model_file
    manifest = Manifest(
        model=name, opset_requested=opset, opset_written=opset,
        graph=ModelFile(file=model_file, sha256=sha256_of(path), format=fields.pop("format", "onnx"),
                        bytes=path.stat().st_size,
                        inputs=[TensorSpec(input_name, ["batch", 3, size, size])],
                        outputs=[TensorSpec(output_name, ["batch", classes])]),
        family="test", input_shape=[3, size, size], num_classes=classes, paddle_model=paddle_model,
        weights={"kind": "test", "trained": False}, **fields)
    save_manifest(folder / MANIFEST_NAME, manifest)
    return folder / MANIFEST_NAME


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory) -> Path:
    """Fast tier: a 32x32, 10-class ONNX model (no paddle) with its manifest; returns the manifest path."""
    folder = tmp_path_factory.mktemp("onnx-tiny")
    make_tiny_onnx(folder / "model.onnx")
    return write_manifest(folder)


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
    """Full tier: a real Paddle model + its paddle2onnx ONNX (opset 13) + manifest; returns its path."""
    import onnx
    import paddle2onnx

    logging.getLogger("paddle2onnx").setLevel(logging.WARNING)
    out = tmp_path_factory.mktemp("tiny")
    model_file, params_file = _tiny_paddle_model(out, size=32, classes=10)
    onnx_bytes = paddle2onnx.export(str(model_file), str(params_file), None, opset_version=13,
                                    auto_upgrade_opset=False, optimize_tool="none")
    (out / "model.onnx").write_bytes(onnx_bytes)
    graph = onnx.load(str(out / "model.onnx")).graph
    return write_manifest(out, input_name=graph.input[0].name, output_name=graph.output[0].name,
                          paddle_model={"model_file": model_file.name, "params_file": params_file.name})


@pytest.fixture
def seeded_batch():
    def make(batch: int, size: int = 32) -> np.ndarray:
        return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)

    return make
