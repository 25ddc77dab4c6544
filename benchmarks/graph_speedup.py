"""What the export's graph passes buy: each model's optimised export against the same model exported with
``--optimize none``, on ONNX Runtime and OpenVINO (CPU, fp32), batches 1 and 8, in one process.

Every variant is loaded through the benchmark's own runtime adapters (the settings ``python -m bench`` runs
with), warmed up, then timed in interleaved rounds: within a round each variant in turn runs a short block (a
pause, one untimed run, then ``--runs`` timed runs; the order rotated every round), so slow drift in the machine's
load hits both sides of a ratio. Blocks, not run-by-run turns: ONNX Runtime's intra-op threads keep spinning for
a while after a run, and three sessions taking turns run by run took the two cores from one another (times twice
those of a session alone, A/A ratios 0.9-1.45); the pause lets the last session's threads park.
Per round each variant keeps its fastest run; the ratio optimised / unoptimised is taken per round and the table
gives its median and range. ``same`` is the unoptimised model loaded a second time (an A/A control): its ratio
is the noise floor of the run, and a ratio inside it is no change.

``--clock cpu`` times 1 thread by process CPU time instead of wall time: the work a graph costs, unaffected by
time spent descheduled, and the steadier signal on a shared machine (it is not the latency a user sees).

At batch 8 it also prints each model's achieved GFLOP/s (GEMM work, ``graph_flops.py``) on the faster runtime
against the sgemm peak measured right after the model (numpy and ONNX Runtime MatMul, same threads), and at
batch 1 Paddle Inference fp32 against the best fp32 configuration (``paddle_vs_best.py``; ``--no-paddle`` skips
it), with its ceilings: at the sgemm peak, and at the CPU's fp32 FMA peak (``fma_peak.py``, built with the
system's C compiler), above which no kernel doing the graph's multiply-adds in fp32 can go. The targets
(``speed_targets.py``) are printed beside the figures they judge: MobileViT at >= 70 % of the peak, no LeViT
slower than its A/A noise, the best configuration >= 6x Paddle.

Run it on a quiet machine; the lead commits its table:

    python benchmarks/graph_speedup.py --out results/graph_speedup.md [--model LeViT_128S ...] [--opset 17]
        [--level portable] [--runtimes ort ov] [--batches 1 8] [--rounds 9] [--runs 5] [--threads N]
        [--no-paddle]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Run from a checkout: make the repo and this folder importable even when the editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx
from fma_peak import FmaProbeUnavailable, fma_peak
from graph_flops import count_macs, sgemm_peak
from paddle_vs_best import format_row as format_paddle_row
from paddle_vs_best import markdown as paddle_markdown
from paddle_vs_best import paddle_row, with_ceiling
from speed_targets import gemm_share_verdict, noise_verdict

from bench.harness.env import cpu_info, cpu_name, package_versions
from bench.launcher import ExportSpec, launch_export
from core.artifact import Artifact
from core.cores import default_threads
from core.files import write_json_atomic, write_text_atomic
from export.models import MODELS
from export.optimize.levels import LEVELS
from runtimes import get_runtime
from runtimes.base import RuntimeOptions


def lscpu_flags() -> str:
    """The CPU model and its flags as ``lscpu`` prints them (the SIMD the kernels can use)."""
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        keep = [line for line in out.splitlines() if line.split(":")[0].strip() in ("Model name", "Flags")]
        if keep:
            return "\n".join(keep)
    info = cpu_info()
    return f"Model name: {info.get('model')}\nFlags: {' '.join(sorted(info.get('flags') or []))}"


def load_variant(runtime: str, manifest: Path, batch: int, threads: int, x: np.ndarray):
    """A loaded, prepared runtime adapter: calling ``.run()`` runs one inference."""
    adapter = get_runtime(runtime)(RuntimeOptions(threads=threads, batch=batch))
    artifact = Artifact.from_manifest(manifest)
    adapter.load(artifact)
    adapter.prepare({artifact.input_name: x})
    return adapter


FLOPS_BATCH = 8  # the batch whose GEMM work and GFLOP/s flops_row reads

PAUSE_S = 0.05  # between blocks: longer than ONNX Runtime's intra-op threads spin after a run


def time_interleaved(adapters: dict, rounds: int, runs: int, clock=time.perf_counter,
                     warmup: int = 3, pause: float = PAUSE_S, statistic=min) -> dict[str, list[float]]:
    """Per variant, its fastest run (ms) in each round (or ``statistic`` of the round's runs); within a round the
    variants take turns block by block."""
    names = list(adapters)
    for name in names:
        for _ in range(warmup):
            adapters[name].run()
    best: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(pause)
            adapters[name].run()  # untimed: brings this variant's weights back into the caches
            samples = []
            for _ in range(runs):
                start = clock()
                adapters[name].run()
                samples.append((clock() - start) * 1e3)
            best[name].append(statistic(samples))
    return best


def ratio_row(model: str, runtime: str, batch: int, best: dict[str, list[float]], level: str) -> dict:
    row = {"model": model, "runtime": runtime, "batch": batch, "base_ms": statistics.median(best["none"])}
    for name in ("same", level):
        ratios = [b / a for a, b in zip(best["none"], best[name], strict=True)]
        row[name] = {"ms": statistics.median(best[name]), "ratio": statistics.median(ratios),
                     "lo": min(ratios), "hi": max(ratios)}
    row["verdict"] = noise_verdict(MODELS[model].family, row[level]["ratio"], row["same"]["hi"])
    return row


def measure_model(model: str, manifests: dict[str, Path], args: argparse.Namespace) -> list[dict]:
    rows = []
    shape = Artifact.from_manifest(manifests["none"]).input_shape[1:]
    for runtime in args.runtimes:
        for batch in args.batches:
            x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
            adapters = {name: load_variant(runtime, manifests[name if name != "same" else "none"], batch,
                                           args.threads, x) for name in ("none", "same", args.level)}
            try:
                best = time_interleaved(adapters, args.rounds, args.runs,
                                        time.process_time if args.clock == "cpu" else time.perf_counter)
            finally:
                for adapter in adapters.values():
                    adapter.close()
            rows.append(ratio_row(model, runtime, batch, best, args.level))
            print(format_ratio(rows[-1], args.level), flush=True)
    return rows


def flops_row(model: str, manifest: Path, rows: list[dict], args: argparse.Namespace) -> dict | None:
    """GEMM work at batch 8, the faster runtime's achieved GFLOP/s and a reading of the sgemm peak taken now."""
    at8 = [r for r in rows if r["batch"] == FLOPS_BATCH]
    if not at8:
        return None
    graph = onnx.load(str(manifest))
    count = count_macs(graph, FLOPS_BATCH)
    best = min(at8, key=lambda r: r[args.level]["ms"])
    split = {op: round(macs / count["macs"], 3) for op, macs in sorted(count["by_op"].items())}
    return {"model": model, "gflop": 2.0 * count["macs"] / 1e9, "split": split, "runtime": best["runtime"],
            "gflops": 2.0 * count["macs"] / (best[args.level]["ms"] / 1e3) / 1e9,
            "none_ms": {r["runtime"]: r["base_ms"] for r in at8},
            "peak": sgemm_peak(args.peak_n, args.threads, runs=5), "uncounted_nodes": len(count["unknown"])}


def against_peak(found: dict, peak: float) -> dict:
    """``found`` with its share of ``peak`` and the floor: the ratio to the unoptimised graph if every GEMM ran
    at the peak and nothing else took time, below which no exact graph rewrite can go."""
    at_peak_ms = found["gflop"] / peak * 1e3
    share = found["gflops"] / peak
    return {**found, "peak_used": peak, "share": share, "at_peak_ms": at_peak_ms,
            "floor": {runtime: at_peak_ms / ms for runtime, ms in found["none_ms"].items()},
            "verdict": gemm_share_verdict(MODELS[found["model"]].family, share)}


def print_flops(f: dict) -> None:
    print(f"{f['model']}: batch 8 {f['gflop']:.2f} GFLOP, best {f['runtime']} {f['gflops']:.1f} GFLOP/s = "
          f"{f['share']:.0%} of the sgemm peak {f['peak_used']:.1f} (read now: numpy {f['peak']['numpy']:.1f}, "
          f"ORT MatMul {f['peak']['ort_matmul']:.1f}); split {f['split']}; all GEMMs at the peak "
          f"{f['at_peak_ms']:.1f} ms = " + ", ".join(f"{rt} ratio floor {v:.2f}" for rt, v in f["floor"].items())
          + (f"; target {f['verdict']}" if f["verdict"] else ""), flush=True)


def format_ratio(row: dict, level: str) -> str:
    same, opt = row["same"], row[level]
    return (f"{row['model']:<14} {row['runtime']:>3} b{row['batch']:<2} none {row['base_ms']:8.2f} ms  "
            f"{level} {opt['ms']:8.2f} ms  ratio {opt['ratio']:.3f} [{opt['lo']:.3f}..{opt['hi']:.3f}]  "
            f"A/A {same['ratio']:.3f} [{same['lo']:.3f}..{same['hi']:.3f}]  {row['verdict']}")


def markdown(rows: list[dict], flops: list[dict], args: argparse.Namespace, header: dict,
             paddle: list[dict] = ()) -> str:
    level = args.level
    lines = [f"# Graph passes: `--optimize {level}` vs `--optimize none`", "",
             f"opset {args.opset}, fp32, {args.threads} threads, clock {args.clock}, "
             f"{args.rounds} rounds x {args.runs} runs, "
             "interleaved block by block in one process; ratio = median over rounds of (fastest optimised run / "
             "fastest "
             "unoptimised run) in the round, [range over rounds]; A/A = the unoptimised model against itself.", "",
             f"Machine: {header['cpu']}; {header['python']}; "
             + ", ".join(f"{k} {v}" for k, v in header["versions"].items() if v), "",
             f"| model | runtime | batch | none ms | {level} ms | ratio | A/A ratio | target |",
             "|---|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        o, s = r[level], r["same"]
        lines.append(f"| {r['model']} | {r['runtime']} | {r['batch']} | {r['base_ms']:.2f} | {o['ms']:.2f} | "
                     f"{o['ratio']:.3f} [{o['lo']:.3f}..{o['hi']:.3f}] | "
                     f"{s['ratio']:.3f} [{s['lo']:.3f}..{s['hi']:.3f}] | {r['verdict']} |")
    if flops:
        lines += ["", f"## Achieved GEMM GFLOP/s at batch 8 ({level} graph, faster runtime) vs sgemm peak", "",
                  "peak = the best sgemm reading of the whole run (numpy or ORT MatMul; with clock cpu ORT MatMul "
                  "only, read at the one thread the models ran on; "
                  f"{args.peak_n}x{args.peak_n}, read once per model; a low reading is the machine being busy, "
                  "not a lower peak); floor = the ratio to the unoptimised graph if every GEMM ran at that peak "
                  "and nothing else took time: no exact graph rewrite can go below it.", "",
                  "| model | GFLOP | runtime | GFLOP/s | numpy read | ORT MatMul read | share of peak | split | "
                  "at peak ms | floor | target |",
                  "|---|---:|---|---:|---:|---:|---:|---|---:|---|---|"]
        for f in flops:
            split = ", ".join(f"{op} {share:.0%}" for op, share in f["split"].items())
            floor = ", ".join(f"{rt} {v:.2f}" for rt, v in f["floor"].items())
            lines.append(f"| {f['model']} | {f['gflop']:.2f} | {f['runtime']} | {f['gflops']:.1f} | "
                         f"{f['peak']['numpy']:.1f} | {f['peak']['ort_matmul']:.1f} | {f['share']:.0%} | {split} | "
                         f"{f['at_peak_ms']:.1f} | {floor} | {f['verdict']} |")
        lines += ["", f"Peak used: {flops[0]['peak_used']:.1f} GFLOP/s."]
    fma = header.get("fma_peak")
    if fma:
        lines += ["", f"CPU fp32 FMA peak (`benchmarks/fma_peak.py`, {fma['isa']}, {fma['threads']} threads): "
                  f"{fma['gflops']:.1f} GFLOP/s ({fma['gflops_one_thread']:.1f} on one thread at a clock read of "
                  f"{fma['clock_ghz']:.2f} GHz: {fma['flop_per_cycle_one_thread']:.1f} flop/cycle)."]
    lines += paddle_markdown(list(paddle))
    lines += ["", "CPU (lscpu):", "", *(f"    {line}" for line in header["lscpu"].splitlines())]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="markdown table to write (e.g. results/graph_speedup.md); "
                   "the figures go to the same name with .json")
    p.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--level", default="portable", choices=[name for name in LEVELS if name != "none"])
    p.add_argument("--runtimes", nargs="+", default=["ort", "ov"], choices=["ort", "ov"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=default_threads(), help="default: physical cores")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (default): latency at --threads; cpu: 1 thread, process CPU time (work, not latency)")
    p.add_argument("--peak-n", type=int, default=2048, help="size of the sgemm peak's square matrices")
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--no-paddle", action="store_true",
                   help="skip Paddle Inference against the best fp32 configuration at batch 1")
    args = p.parse_args(argv)
    if args.clock == "cpu":
        args.threads = 1
    if args.level == "ort" and args.runtimes != ["ort"]:
        p.error("--level ort makes an ONNX Runtime-only graph: pass --runtimes ort")
    return args


def run_peak(flops: list[dict], clock: str) -> float:
    """The machine's sgemm peak: the best of the readings so far. With ``--clock cpu`` the models run on one
    thread, so only ORT's MatMul reading counts (taken at that thread count; numpy's BLAS uses its own threads)."""
    return max(f["peak"]["ort_matmul"] if clock == "cpu" else max(f["peak"].values()) for f in flops)


def paddle_available(args: argparse.Namespace) -> bool:
    """Whether to time Paddle Inference against the best configuration (wall clock only), saying why not."""
    if args.no_paddle:
        return False
    if args.clock != "wall":
        print("Paddle against the best configuration: skipped (it is a latency figure: --clock wall)")
        return False
    found = get_runtime("paddle").probe()
    if not found.available:
        print(f"Paddle against the best configuration: skipped, Paddle Inference unavailable ({found.reason})")
    return found.available


def measured_fma_peak(threads: int) -> dict | None:
    """The CPU's fp32 FMA peak on ``threads`` threads (``fma_peak.py``), or None with the reason printed."""
    try:
        found = fma_peak(threads)
    except FmaProbeUnavailable as exc:
        print(f"FMA peak: not measured ({exc})")
        return None
    print(f"FMA peak: {found['gflops']:.1f} GFLOP/s fp32 ({found['isa']}, {found['threads']} threads)", flush=True)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = {"cpu": cpu_name(cpu_info()), "python": f"Python {platform.python_version()}",
              "versions": package_versions(), "lscpu": lscpu_flags()}
    print(header["lscpu"], flush=True)
    rows, flops, paddle = [], [], []
    with_paddle = paddle_available(args)
    for model in args.model:
        manifests = {level: launch_export(ExportSpec(model, args.opset, "dynamic", "seeded", args.artifacts,
                                                          optimize=level))
                     for level in ("none", args.level)}
        model_rows = measure_model(model, manifests, args)
        rows += model_rows
        # the GEMM work is the same at every level (the passes are exact); count it on the standard-ONNX graph,
        # whose shapes ONNX shape inference knows (it does not know the ort level's com.microsoft ops)
        found = flops_row(model, manifests["none"].parent / "model.onnx", model_rows, args)
        if found:
            flops.append(found)
            print_flops(against_peak(found, run_peak(flops, args.clock)))
        if with_paddle:
            paddle.append(paddle_row(model, manifests, args.runtimes, args.threads, args.rounds, args.runs,
                                     load_variant, time_interleaved))
            print(format_paddle_row(paddle[-1]), flush=True)
    peak = run_peak(flops, args.clock) if flops else None
    flops = [against_peak(f, peak) for f in flops]
    per_image = {f["model"]: f["gflop"] / FLOPS_BATCH for f in flops}
    header["fma_peak"] = measured_fma_peak(args.threads) if paddle else None
    fma_gflops = (header["fma_peak"] or {}).get("gflops")
    paddle = [with_ceiling(r, per_image[r["model"]], peak, fma_gflops) if r["model"] in per_image else r
              for r in paddle]
    for r in paddle:
        if "ceiling" in r:
            at_fma = f", at the FMA peak {r['fma_ceiling']:.1f}x" if "fma_ceiling" in r else ""
            print(f"{r['model']}: Paddle / best {r['ratio']:.2f}x; ceiling at the sgemm peak {r['ceiling']:.1f}x"
                  f"{at_fma} ({r['ceiling_note']})")
    write_text_atomic(args.out, markdown(rows, flops, args, header, paddle))
    write_json_atomic(args.out.with_suffix(".json"), {"settings": {k: str(v) for k, v in vars(args).items()},
                                                      "machine": header, "ratios": rows, "flops": flops,
                                                      "paddle": paddle})
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
