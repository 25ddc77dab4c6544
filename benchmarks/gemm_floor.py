"""The floor under any exact graph rewrite: each model's GEMM work (and Softmax) against the whole unoptimised
model, on the same runtime, kernels and threads.

``graph_speedup.py`` asks the graph passes for optimised / unoptimised <= 0.85. An exact rewrite changes data
movement and element-wise work, never the multiply-adds: folding BatchNorm moves a scale into weights that still
multiply, fusing a bias or an activation into a GEMM still runs the GEMM. So the GEMM layers' time, plus each
attention's Softmax (no graph can drop it), bounds from below what any rewrite can reach: floor = kept / whole.
Everything else (LayerNorm included) counts as free, so the floor errs low, never high.

ONNX Runtime (``ort``): a GEMM skeleton, timed against the ``--optimize none`` model in interleaved rounds as in
``graph_speedup.py`` (plain sessions with the adapter's settings: ORT_ENABLE_ALL, sequential, the thread count).
The skeleton is every MatMul, Gemm, Conv and Softmax node with its weights and attributes, nothing else. A node
whose input came, through shape-keeping element-wise ops only (BatchNorm, activations, a constant bias or scale),
from another kept node reads that node's output directly, so chains stay chains (the stem's convolutions keep one
blocked layout, fc1 feeds fc2, QK^T feeds Softmax feeds the V product); any other input (after a Reshape,
Transpose, Split or residual Add) becomes an input of the skeleton. Outputs nobody reads are bound once to
buffers (IOBinding), so returning them costs nothing. ORT's kernels do not depend on their neighbours, so the
skeleton's GEMMs run as they do in the model.

OpenVINO (``ov``): it picks kernels and fusions by context (the skeleton's FullyConnected layers ran slower than
the model's, 28.0 against 22.8 ms for LeViT_128S at batch 8, and it fuses each attention, bias, Softmax and
activation included, into one Subgraph), so the floor comes from its per-layer counters instead, on the model and
on its skeleton: projections (FullyConnected), convolutions and attention (MatMul, Softmax, or a Subgraph made
from them) each at the lower of the two, the projections at their best time alone where lower still, over the
model's median wall time per run (profiling overhead included, so it errs low again).

Would other kernels run the GEMMs faster? The projection shapes (MatMul with a constant weight: the Linear layers,
most of the work) are timed alone, [M, K] x constant [K, N] at the same threads, on numpy's BLAS, ONNX Runtime and
OpenVINO, and the sums per library are printed: a runtime whose kernels lose to another's on these shapes shows.

A floor above 0.85 on both runtimes means no exact rewrite reaches 0.85 for that model and batch on this machine.

    python benchmarks/gemm_floor.py --out results/gemm_floor.md [--model LeViT_128S ...] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx
from graph_flops import fixed_batch, shapes_at_batch
from graph_speedup import lscpu_flags, time_interleaved
from onnx import TensorProto, helper, numpy_helper

from bench.harness.env import cpu_info, package_versions
from bench.launcher import ExportSpec, launch_export
from core.artifact import Artifact
from core.cores import default_threads
from core.files import write_json_atomic, write_text_atomic
from export.models import MODELS
from runtimes.base import RuntimeOptions
from runtimes.ort_session import cpu_session
from runtimes.ov_compile import compile_config

KEPT_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Softmax"}
# element-wise ops that keep their activation input's shape: a kept node behind a chain of them feeds the next
PASS_THROUGH = {
    "BatchNormalization",
    "Relu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Clip",
    "Erf",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Identity",
    "LeakyRelu",
    "Elu",
    "Gelu",
    "Softplus",
    "PRelu",
    "Pow",
    "Sqrt",
}
WARMUP, PROFILED_RUNS = 5, 20
ISOLATED_SECONDS = 0.25  # per projection shape and library: the best run within this much time


def _activation_inputs(node: onnx.NodeProto, constants: set[str]) -> list[str]:
    return [name for name in node.input if name and name not in constants]


def gemm_skeleton(model: onnx.ModelProto, batch: int) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """The GEMM + Softmax skeleton of ``model`` at ``batch`` and the shapes of its inputs."""
    shapes = shapes_at_batch(model, batch)
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {out: node for node in model.graph.node for out in node.output}
    kept_outputs = {o for n in model.graph.node if n.op_type in KEPT_OPS for o in n.output}

    def source(name: str) -> str | None:
        """The kept tensor ``name`` is an element-wise function of, shape unchanged; None if there is none."""
        want = shapes.get(name)
        while name not in kept_outputs:
            node = producer.get(name)
            if node is None or node.op_type not in PASS_THROUGH:
                return None
            inputs = _activation_inputs(node, constants)
            if len(inputs) != 1 or shapes.get(inputs[0]) != want:
                return None  # two activations (a residual) or a broadcast: the chain ends here
            name = inputs[0]
        return name

    nodes, inputs, read = [], {}, set()
    for node in model.graph.node:
        if node.op_type not in KEPT_OPS:
            continue
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, name in enumerate(node.input):
            if not name or name in constants:
                continue
            found = source(name)
            if found is None:
                if name not in shapes:
                    raise ValueError(
                        f"{node.op_type} {node.name!r} reads {name!r}, whose shape at batch {batch} "
                        "ONNX shape inference does not know: give the model static shapes but the batch"
                    )
                inputs[name] = shapes[name]
                found = name
            new.input[i] = found
            read.add(found)
        nodes.append(new)
    used_constants = {name for n in nodes for name in n.input} & constants
    nodes = [n for n in model.graph.node if n.op_type == "Constant" and set(n.output) & used_constants] + nodes
    outputs = [o for n in nodes for o in n.output if o not in read]
    graph = helper.make_graph(
        nodes,
        "gemm_skeleton",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shapes[name])) for name in outputs],
        [t for t in model.graph.initializer if t.name in used_constants],
    )
    skeleton = helper.make_model(graph, opset_imports=model.opset_import)
    onnx.checker.check_model(skeleton)
    return skeleton, inputs


class OrtModel:
    """A model on ONNX Runtime CPU with the adapter's settings; inputs and outputs bound once (IOBinding)."""

    def __init__(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int) -> None:
        self.session = cpu_session(model.SerializeToString(), threads, quiet=True)  # as the adapter makes it
        self.binding = self.session.io_binding()
        for name, value in feeds.items():
            self.binding.bind_cpu_input(name, value)
        first = self.session.run(None, feeds)
        self.buffers = [np.empty_like(v) for v in first]
        for out, buffer in zip(self.session.get_outputs(), self.buffers, strict=True):
            self.binding.bind_output(out.name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def close(self) -> None:
        self.session = self.binding = None


class OvModel:
    """A model on OpenVINO CPU with the adapter's settings (LATENCY, f32, the thread count), shapes static;
    ``perf_counts``: with its per-layer counters on."""

    def __init__(
        self, model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int, perf_counts: bool = False
    ) -> None:
        import openvino as ov

        core = ov.Core()
        with tempfile.TemporaryDirectory(prefix="gemm-floor-") as tmp:
            path = Path(tmp) / "model.onnx"
            onnx.save(model, str(path))
            read = core.read_model(str(path))
        read.reshape({name: list(value.shape) for name, value in feeds.items()})
        config = compile_config("CPU", RuntimeOptions(threads=threads), profile=perf_counts)  # as the adapter's
        self.compiled = core.compile_model(read, "CPU", config)
        self.request = self.compiled.create_infer_request()
        for name, value in feeds.items():
            self.request.set_tensor(name, ov.Tensor(value, shared_memory=True))

    def run(self) -> None:
        self.request.infer()

    def close(self) -> None:
        self.compiled = self.request = None


def _model_feeds(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    first = model.graph.input[0]
    shape = [batch, *[d.dim_value for d in first.type.tensor_type.shape.dim[1:]]]
    return {first.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def measure_ort_floor(model_name: str, model: onnx.ModelProto, batch: int, args: argparse.Namespace) -> dict:
    """The skeleton against the whole model on ONNX Runtime, interleaved."""
    skeleton, skeleton_inputs = gemm_skeleton(model, batch)
    rng = np.random.default_rng(1)
    skeleton_feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in skeleton_inputs.items()}
    variants = {
        "model": OrtModel(model, _model_feeds(model, batch), args.threads),
        "skeleton": OrtModel(skeleton, skeleton_feeds, args.threads),
    }
    try:
        best = time_interleaved(variants, args.rounds, args.runs)
    finally:
        for variant in variants.values():
            variant.close()
    ratios = [s / m for m, s in zip(best["model"], best["skeleton"], strict=True)]
    census = Counter(n.op_type for n in skeleton.graph.node)
    return {
        "model": model_name,
        "runtime": "ort",
        "batch": batch,
        "method": "skeleton",
        "model_ms": statistics.median(best["model"]),
        "kept_ms": statistics.median(best["skeleton"]),
        "floor": statistics.median(ratios),
        "lo": min(ratios),
        "hi": max(ratios),
        "kept": ", ".join(f"{op} {n}" for op, n in sorted(census.items())),
    }


def ov_counters(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int) -> tuple[dict, list[float]]:
    """ms per run by kind of layer (``ov_kind``) from OpenVINO's per-layer counters, and the wall ms of each run."""
    import openvino as ov

    op_types = {node.name: node.op_type for node in model.graph.node}
    compiled = OvModel(model, feeds, threads, perf_counts=True)
    originals = {}
    for op in compiled.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        originals[op.get_friendly_name()] = {op_types.get(name) for name in names.split(",")}
    for _ in range(WARMUP):
        compiled.run()
    kind_ms: dict[str, float] = defaultdict(float)
    wall_ms = []
    for _ in range(PROFILED_RUNS):
        start = time.perf_counter()
        compiled.run()
        wall_ms.append((time.perf_counter() - start) * 1e3)
        for info in compiled.request.get_profiling_info():
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                kind = ov_kind(info.node_type, originals.get(info.node_name, set()))
                kind_ms[kind] += info.real_time.total_seconds() * 1e3 / PROFILED_RUNS
    compiled.close()
    return dict(kind_ms), wall_ms


def ov_kind(layer_type: str, original_ops: set) -> str:
    """projection (FullyConnected), convolution, attention (MatMul/Softmax layers, or a fused Subgraph made
    from them) or other."""
    if layer_type == "FullyConnected":
        return "projection"
    if layer_type in ("Convolution", "GroupConvolution", "Deconvolution"):
        return "convolution"
    if layer_type in ("MatMul", "Softmax", "ScaledDotProductAttention") or original_ops & {"MatMul", "Softmax"}:
        return "attention"
    return "other"


def measure_ov_floor(
    model_name: str, model: onnx.ModelProto, batch: int, threads: int, projections_best_ms: float | None
) -> dict:
    """OpenVINO's per-layer counters on the whole model and on its skeleton: each kind of kept work at the lower
    of the two (the model's layers carry fused element-wise work, the skeleton's do not, and OpenVINO may pick
    other kernels for either), the projections at their best time alone where lower still, over the model's
    median wall time per run."""
    fixed = fixed_batch(model, batch)
    whole, wall_ms = ov_counters(fixed, _model_feeds(model, batch), threads)
    skeleton, skeleton_inputs = gemm_skeleton(model, batch)
    rng = np.random.default_rng(1)
    bare, _ = ov_counters(
        skeleton,
        {name: rng.standard_normal(shape).astype(np.float32) for name, shape in skeleton_inputs.items()},
        threads,
    )
    kept = {kind: min(whole.get(kind, 0.0), bare.get(kind, 0.0)) for kind in ("projection", "convolution", "attention")}
    if projections_best_ms is not None:
        kept["projection"] = min(kept["projection"], projections_best_ms)
    kept_ms = sum(kept.values())
    run_ms = statistics.median(wall_ms)
    ratios = [kept_ms / ms for ms in wall_ms]
    return {
        "model": model_name,
        "runtime": "ov",
        "batch": batch,
        "method": "counters",
        "model_ms": run_ms,
        "kept_ms": kept_ms,
        "floor": kept_ms / run_ms,
        "lo": min(ratios),
        "hi": max(ratios),
        "kept": ", ".join(
            f"{kind} {ms:.2f} (model {whole.get(kind, 0.0):.2f}, skeleton {bare.get(kind, 0.0):.2f})"
            for kind, ms in kept.items()
        ),
    }


def projections(model: onnx.ModelProto, batch: int) -> Counter:
    """How many MatMul nodes with a constant weight there are of each [M, K] x [K, N] shape at ``batch``."""
    shapes = shapes_at_batch(model, batch)
    weights = {t.name for t in model.graph.initializer}
    found: Counter = Counter()
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights and node.input[0] in shapes:
            k, n = shapes[node.input[1]]
            found[(int(np.prod(shapes[node.input[0]][:-1])), k, n)] += 1
    return found


def _matmul_model(k: int, n: int) -> onnx.ModelProto:
    weight = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "projection",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _best_ms(fn) -> float:
    fn()
    best, deadline = float("inf"), time.perf_counter() + ISOLATED_SECONDS
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def measure_projections(model_name: str, model: onnx.ModelProto, batch: int, threads: int) -> dict:
    """The projection shapes alone: summed best ms per library (numpy's BLAS, ORT, OpenVINO)."""
    totals: dict[str, float] = defaultdict(float)
    flop = 0.0
    for (m, k, n), count in projections(model, batch).items():
        x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
        w = np.random.default_rng(2).standard_normal((k, n)).astype(np.float32)
        projection = _matmul_model(k, n)
        ort_model, ov_model = OrtModel(projection, {"x": x}, threads), OvModel(projection, {"x": x}, threads)
        times = {
            "numpy": _best_ms(partial(np.matmul, x, w)),
            "ort": _best_ms(ort_model.run),
            "ov": _best_ms(ov_model.run),
        }
        times["best"] = min(times.values())
        for lib, ms in times.items():
            totals[lib] += count * ms
        flop += 2.0 * m * k * n * count
    row = {"model": model_name, "batch": batch, "gflop": flop / 1e9, **{f"{lib}_ms": ms for lib, ms in totals.items()}}
    print(
        f"{model_name:<14} b{batch:<2} projections alone ({flop / 1e9:.2f} GFLOP): "
        + ", ".join(f"{lib} {ms:.2f} ms" for lib, ms in totals.items()),
        flush=True,
    )
    return row


def format_row(r: dict) -> str:
    return (
        f"{r['model']:<14} {r['runtime']:>3} b{r['batch']:<2} model {r['model_ms']:8.2f} ms  kept "
        f"{r['kept_ms']:8.2f} ms  floor {r['floor']:.3f} [{r['lo']:.3f}..{r['hi']:.3f}]  ({r['method']}: {r['kept']})"
    )


def markdown(rows: list[dict], alone: list[dict], args: argparse.Namespace, header: dict) -> str:
    lines = [
        "# The floor under exact graph rewrites: GEMMs + Softmax against the whole unoptimised model",
        "",
        f"opset {args.opset}, fp32, `--optimize none` exports, {args.threads} threads. floor = kept / whole model: "
        "the lowest optimised / unoptimised ratio an exact rewrite could reach if every op but the GEMMs and "
        "Softmax cost nothing. ort: the GEMM skeleton timed against the model, "
        f"{args.rounds} rounds x {args.runs} runs interleaved in one process, median [range] over rounds; ov: "
        f"OpenVINO's per-layer counters over {PROFILED_RUNS} runs, GEMM layers + Softmax over the median wall time "
        "per run, [range over runs], the FullyConnected layers at the projections' best time alone where lower.",
        "",
        f"Machine: {header['cpu']}; {header['python']}; "
        + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if v),
        "",
        "| model | runtime | batch | model ms | kept ms | floor | kept |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['batch']} | {r['model_ms']:.2f} | {r['kept_ms']:.2f} "
            f"| {r['floor']:.3f} [{r['lo']:.3f}..{r['hi']:.3f}] | {r['kept']} |"
        )
    if alone:
        lines += [
            "",
            "## The projection GEMMs alone, each shape on each library (sum of best runs, ms)",
            "",
            "| model | batch | GFLOP | numpy | ORT | OpenVINO | best per shape |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {a['model']} | {a['batch']} | {a['gflop']:.2f} | {a['numpy_ms']:.2f} | {a['ort_ms']:.2f} | "
            f"{a['ov_ms']:.2f} | {a['best_ms']:.2f} |"
            for a in alone
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="markdown table to write; the figures go to .json")
    p.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--runtimes",
        nargs="+",
        default=["ort", "ov"],
        choices=["ort", "ov"],
    )
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=default_threads(), help="default: physical cores")
    p.add_argument(
        "--no-projections",
        dest="projections",
        action="store_false",
        help="skip timing the projection shapes alone on each library",
    )
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = {
        "cpu": cpu_info().get("model"),
        "python": f"Python {platform.python_version()}",
        "versions": package_versions(),
        "lscpu": lscpu_flags(),
    }
    print(header["lscpu"], flush=True)
    rows, alone = [], []
    for name in args.model:
        manifest = launch_export(ExportSpec(name, args.opset, "dynamic", "seeded", args.artifacts, optimize="none"))
        model = onnx.load(str(Artifact.from_manifest(manifest).onnx_path))
        for batch in args.batches:
            projections_best_ms = None
            if args.projections:
                alone.append(measure_projections(name, model, batch, args.threads))
                projections_best_ms = alone[-1]["best_ms"]
            for runtime in args.runtimes:
                if runtime == "ort":
                    rows.append(measure_ort_floor(name, model, batch, args))
                else:
                    rows.append(measure_ov_floor(name, model, batch, args.threads, projections_best_ms))
                print(format_row(rows[-1]), flush=True)
    write_text_atomic(args.out, markdown(rows, alone, args, header))
    write_json_atomic(
        args.out.with_suffix(".json"),
        {
            "settings": {k: str(v) for k, v in vars(args).items()},
            "machine": header,
            "floors": rows,
            "projections_alone": alone,
        },
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
