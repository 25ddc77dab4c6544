"""What reduced precision buys on this CPU: per model, OpenVINO fp32 vs bf16 vs int8 and ONNX Runtime fp32 vs
int8, at batches 1 and 8, in one process. The cells alternate round by round (every cell once per round, in a
rotating order), so drift in machine load hits all of them; the table gives the median p50 latency over the
rounds and its ratio to the same runtime's fp32 at the same batch.

int8 and bf16 speed depend on the instruction set: int8 needs VNNI (AVX512-VNNI, AVX-VNNI) or AMX-INT8 to beat
fp32, bf16 needs AVX512-BF16 or AMX-BF16 (without them OpenVINO runs the bf16 hint in f32, which the table
says). The CPU flags, and what is missing, are printed beside the table and written with it. The targets
(``speed_targets.py``: ort int8 <= 0.75x fp32 at batch 8 and never slower at batch 1, ov int8 <= 0.6x at batch 8,
ov bf16 <= 0.7x on AMX) are judged only where the CPU has the instructions; elsewhere the ratios are printed as
they are, and ONNX Runtime's int8 is judged by its profile at the largest batch: the share of its run spent in
float islands (Quantize/DequantizeLinear and the float ops between them) at most 10 %.

The int8 models are the export stage's (``python -m export --precision int8 --runtime ov|ort``), made here when
missing, before any timing. Run it on a quiet machine; figures from a shared machine are not results.

    python benchmarks/precision_speedup.py [--model LeViT_128S MobileViT_XXS] [--batch 1 8] [--seconds 2]
        [--rounds 5] [--threads N] [--artifacts DIR] [--no-profile] [--out results/precision_speedup.md]
    python benchmarks/precision_speedup.py --manifest PATH/model.onnx.json ...   # one fp32 export of your own
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Run from a checkout: make the repo importable even when the editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.env import cores_line, cpu_info, package_versions
from bench.harness.measure import MeasureParams, measure
from bench.launcher import ExportSpec, launch_export
from core.artifact import Artifact
from core.cores import default_threads
from core.cpu import cpu_flags, describe, native
from core.files import write_text_atomic
from runtimes import get_runtime
from runtimes.base import RuntimeOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_targets import float_island_share, island_verdict, ratio_verdict

CELLS = (("ov", "fp32"), ("ov", "bf16"), ("ov", "int8"), ("ort", "fp32"), ("ort", "int8"))


@dataclass
class Cell:
    runtime: str
    precision: str
    batch: int
    artifact: Artifact
    p50_ms: list[float]
    ran: str | None = None  # the precision the runtime reports it ran


def artifacts_for(model: str | None, manifest: Path | None, args: argparse.Namespace) -> tuple[str, dict]:
    """(model name, precision cell -> Artifact): the fp32 export and the int8 models derived from it."""
    if manifest is None:
        spec = ExportSpec(model, args.opset, "dynamic", "seeded", args.artifacts)
        manifest = spec.manifest_path if spec.ready() else launch_export(spec)
    found = {("ov", "fp32"): manifest, ("ov", "bf16"): manifest, ("ort", "fp32"): manifest}
    for runtime in ("ov", "ort"):
        found[(runtime, "int8")] = int8_manifest(model, manifest, runtime, args)
    artifacts = {cell: Artifact.from_manifest(path) for cell, path in found.items()}
    return artifacts[("ov", "fp32")].model, artifacts


def int8_manifest(model: str | None, fp32_manifest: Path, runtime: str, args: argparse.Namespace) -> Path:
    if model is not None and args.calibration is None:  # a zoo export: the export stage's own command
        spec = ExportSpec(model, args.opset, "dynamic", "seeded", args.artifacts, "int8", runtime)
        return spec.manifest_path if spec.ready() else launch_export(spec)
    from export.quantize.build import DerivedRequest, derive

    return derive(fp32_manifest, DerivedRequest("int8", runtime, args.calibration)).manifest_path


def one_round(cell: Cell, threads: int, seconds: float) -> None:
    runtime = get_runtime(cell.runtime)(RuntimeOptions(precision=cell.precision, threads=threads, batch=cell.batch))
    try:
        result = measure(runtime, cell.artifact, cell.batch,
                         MeasureParams(warmup=3, iterations=1, min_duration_s=seconds, max_duration_s=3 * seconds))
        cell.ran = runtime.effective.get("precision")
    finally:
        runtime.close()
    cell.p50_ms.append(result.latency.p50)


def run_model(artifacts: dict, batches: list[int], args: argparse.Namespace) -> list[Cell]:
    cells = [Cell(rt, precision, batch, artifacts[(rt, precision)], []) for rt, precision in CELLS
             for batch in batches]
    for number in range(args.rounds):
        shift = number % len(cells)  # rotate the order: no cell always runs first after a pause
        for cell in cells[shift:] + cells[:shift]:
            one_round(cell, args.threads, args.seconds)
    return cells


def table(model: str, family: str | None, cells: list[Cell], flags: dict[str, bool]) -> list[str]:
    """Markdown rows for one model: median p50 over the rounds, its ratio to fp32 and the range of the
    per-round ratios (each round's cells ran back to back)."""
    base = {(c.runtime, c.batch): c for c in cells if c.precision == "fp32"}
    rows = [f"### {model}", "", "| runtime | precision | ran | batch | p50 ms (median of rounds) | vs fp32 "
            "| per-round ratios | target |", "|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        p50 = statistics.median(cell.p50_ms)
        ratio, spread = None, ""
        if cell.precision != "fp32":
            fp32 = base[(cell.runtime, cell.batch)]
            ratio = p50 / statistics.median(fp32.p50_ms)
            per_round = [a / b for a, b in zip(cell.p50_ms, fp32.p50_ms, strict=True)]
            spread = f"{min(per_round):.2f}..{max(per_round):.2f}"
        shown = f"{ratio:.2f}x" if ratio is not None else "1.00x"
        rows.append(f"| {cell.runtime} | {cell.precision} | {cell.ran} | {cell.batch} | {p50:.2f} | {shown} | "
                    f"{spread} | {ratio_verdict(cell.runtime, cell.precision, cell.batch, family, ratio, flags)} |")
    return rows + [""]


def island_rows(artifact: Artifact, batch: int, threads: int, flags: dict[str, bool]) -> list[str]:
    """ONNX Runtime's profile of the int8 model at ``batch``: the share of its float islands, by op type."""
    from bench.layer_times import RUNS, WARMUP

    x = np.random.default_rng(0).standard_normal((batch, *artifact.input_shape[1:])).astype(np.float32)
    options = RuntimeOptions(precision="int8", threads=threads, batch=batch)
    times = get_runtime("ort").layer_times(artifact, x, options, WARMUP, RUNS)
    ops = {op: total / RUNS / 1e3 for op, total in times.microseconds.items()}
    share, islands = float_island_share(ops)
    listed = ", ".join(f"{op} {ms:.2f}" for op, ms in sorted(islands.items(), key=lambda kv: -kv[1]))
    return [f"ort int8 profile, batch {batch} (ms per run, profiled): {island_verdict(share, flags)}; "
            f"{listed or 'no float op'}", ""]


AA_NOTE = ("- this CPU has no bf16: the `ov bf16` rows ran the fp32 configuration again, so their ratio to fp32 is "
           "this run's noise floor (an A/A control)")


def header(args: argparse.Namespace, flags: dict[str, bool]) -> list[str]:
    cpu = cpu_info()
    versions = package_versions(("openvino", "onnxruntime", "nncf"))
    return [
        "# Reduced precision speed-up (benchmarks/precision_speedup.py)", "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {cores_line(cpu)}, "
        f"{platform.system()} {platform.release()}; {args.threads} threads",
        f"- {describe(flags)}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"- {args.rounds} interleaved rounds of {args.seconds:g} s per cell; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        *([] if native("bf16", flags) else [AA_NOTE]), "",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["LeViT_128S", "MobileViT_XXS"])
    parser.add_argument("--manifest", type=Path, help="an fp32 export's manifest instead of --model")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=default_threads(), help="default: physical cores")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calibration", help="calibration set for the int8 models (default: the bundled one)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the ort int8 profile (float islands) after each model's rounds")
    parser.add_argument("--out", type=Path, default=Path("results/precision_speedup.md"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = cpu_flags()
    lines = header(args, flags)
    print("\n".join(lines))
    targets = [(None, args.manifest)] if args.manifest else [(model, None) for model in args.model]
    for model, manifest in targets:
        name, artifacts = artifacts_for(model, manifest, args)
        family = artifacts[("ov", "fp32")].manifest.family
        rows = table(name, family, run_model(artifacts, args.batch, args), flags)
        if not args.no_profile:
            rows += island_rows(artifacts[("ort", "int8")], max(args.batch), args.threads, flags)
        print("\n".join(rows))
        lines += rows
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
