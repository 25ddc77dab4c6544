"""The harness against OpenVINO's own ``benchmark_app`` on the same ONNX file, in both scenarios.

latency     Both run CPU, f32, 1 stream, N threads, static shape [batch, 3, H, W], synchronous infer calls,
            inputs filled once outside the timed loop, for the same number of seconds. benchmark_app accepts
            -nstreams/-nthreads only with ``-hint none``; the harness asks the latency hint with NUM_STREAMS=1 and
            INFERENCE_NUM_THREADS=N, the same configuration (both are read back and printed). Compared: the
            median latency. Target: within 3 %.
throughput  The harness's throughput scenario (THROUGHPUT hint, OPTIMAL_NUMBER_OF_INFER_REQUESTS requests in
            flight) against ``benchmark_app -hint throughput -api async`` (which creates the same number of
            requests). Compared: images/s. Target: within 5 %. Streams, threads, requests and CPU pinning of
            both are read back and printed; a difference is flagged, since the comparison is then not like for
            like.

Rounds alternate (harness, benchmark_app, harness, ...) so drift in machine load hits both; the verdict uses
the median of the round figures, and the spread of the per-round ratios shows the noise it lives with. Run it on
a quiet machine: figures from a loaded one say nothing.

    python benchmarks/ov_vs_benchmark_app.py [--mode latency|throughput|both] [--model MobileViT_XXS LeViT_128S]
        [--opset 17] [--batch 1] [--seconds 5] [--rounds 6] [--threads N] [--manifest PATH] [--artifacts DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run from a checkout: make the repo importable even when the editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.env import cores_line, cpu_info, package_versions
from bench.harness.measure import MeasureParams, measure
from bench.launcher import ExportSpec, launch_export
from core.artifact import Artifact
from core.cores import default_threads
from runtimes import get_runtime
from runtimes.base import RuntimeOptions

TOLERANCE = {"latency": 0.03, "throughput": 0.05}
_FIELDS = {  # benchmark_app's report lines
    "count": r"Count:\s+(\d+)", "median": r"Median:\s+([\d.]+) ms", "mean": r"Average:\s+([\d.]+) ms",
    "ips": r"Throughput:\s+([\d.]+) FPS", "streams": r"NUM_STREAMS: (\S+)",
    "threads": r"INFERENCE_NUM_THREADS: (\S+)", "precision": r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>",
    "requests": r"(\d+) inference requests", "pinning": r"ENABLE_CPU_PINNING: (\S+)",
}


@dataclass(frozen=True)
class Mode:
    name: str
    figure: str  # the compared figure: "median" (ms, lower is better) or "ips" (images/s, higher is better)
    unit: str

    def benchmark_app_args(self, threads: int) -> list[str]:
        if self.name == "latency":
            return ["-hint", "none", "-nstreams", "1", "-nthreads", str(threads), "-api", "sync"]
        return ["-hint", "throughput", "-api", "async"]

    def harness_options(self, threads: int, batch: int) -> RuntimeOptions:
        if self.name == "latency":
            return RuntimeOptions(device="cpu", precision="fp32", threads=threads, batch=batch,
                                  extra={"hint": "latency", "streams": 1})
        return RuntimeOptions(device="cpu", precision="fp32", threads=threads, batch=batch, scenario="throughput")

    def harness_command(self, manifest: Path, batch: int, threads: int, seconds: float) -> str:
        """The CLI run that measures what a harness round measures (the rounds run in this process)."""
        base = (f"python -m bench --runtime ov --manifest {manifest} --batch {batch} --threads {threads} "
                f"--warmup 0 --iterations 1 --duration {seconds:g}")
        if self.name == "latency":
            return f"{base} --option hint=latency --option streams=1"
        return f"{base} --scenario throughput"


MODES = {"latency": Mode("latency", "median", "ms"), "throughput": Mode("throughput", "ips", "images/s")}


def benchmark_app_round(exe: str, mode: Mode, artifact: Artifact, batch: int, threads: int, seconds: float) -> dict:
    shape = f"{artifact.input_name}{[batch, *artifact.input_shape[1:]]}".replace(" ", "")
    cmd = [exe, "-m", str(artifact.onnx_path), "-d", "CPU", "-infer_precision", "f32", "-shape", shape,
           "-t", f"{seconds:g}", *mode.benchmark_app_args(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = {k: re.search(p, out) for k, p in _FIELDS.items()}
    missing = [k for k in ("count", "median", "ips") if not found[k]]
    if missing:
        raise RuntimeError(f"benchmark_app output lacks {missing}:\n{out[-2000:]}")
    result = {k: m.group(1) for k, m in found.items() if m}
    for k in ("median", "mean", "ips"):
        result[k] = float(result[k]) if k in result else None
    result["count"] = int(result["count"])
    result["requests"] = int(result.get("requests") or 1)
    result["command"] = " ".join(cmd)
    return result


def harness_round(mode: Mode, artifact: Artifact, batch: int, threads: int, seconds: float) -> dict:
    # No warm-up beyond the (excluded) first run, as benchmark_app does (the throughput scenario still runs each
    # request once before timing).
    params = MeasureParams(warmup=0, iterations=1, min_duration_s=seconds, max_duration_s=seconds * 3)
    runtime = get_runtime("ov")(mode.harness_options(threads, batch))
    try:
        result = measure(runtime, artifact, batch, params)
    finally:
        runtime.close()
    eff = runtime.effective
    return {"count": result.latency.count, "median": result.latency.p50, "mean": result.latency.mean,
            "ips": result.throughput_ips, "streams": eff.get("num_streams"),
            "threads": eff.get("inference_num_threads"), "precision": eff.get("inference_precision_hint"),
            "requests": result.requests, "pinning": eff.get("cpu_pinning")}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_machine(args: argparse.Namespace) -> None:
    cpu = cpu_info()
    flags = ", ".join(name for name, present in (cpu.get("flags") or {}).items() if present) or "none probed"
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {cores_line(cpu)}, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
          f"openvino {package_versions(('openvino',))['openvino']}")
    print(f"# CPU flags: {flags}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {_load()}")
    print(f"# batch {args.batch}, threads {args.threads}, {args.seconds:g} s per round and tool, {args.rounds} rounds")


def compare(exe: str, mode: Mode, artifact: Artifact, manifest: Path, args: argparse.Namespace) -> bool:
    """Interleaved rounds of one model in one mode; prints the rounds, the commands and the verdict."""
    print(f"\n## {artifact.model} opset {artifact.opset}, {mode.name} mode ({manifest})\n")
    print(f"{'round':>5}  {'tool':<13} {'count':>6} {'median ms':>10} {'images/s':>9} {'requests':>8} "
          f"{'streams':>7} {'threads':>7} pinning precision")
    figures: dict[str, list[float]] = {"harness": [], "benchmark_app": []}
    settings: dict[str, set] = {"harness": set(), "benchmark_app": set()}
    command = ""
    for i in range(1, args.rounds + 1):
        for tool in ("harness", "benchmark_app"):
            if tool == "harness":
                r = harness_round(mode, artifact, args.batch, args.threads, args.seconds)
            else:
                r = benchmark_app_round(exe, mode, artifact, args.batch, args.threads, args.seconds)
                command = r["command"]
            figures[tool].append(r[mode.figure])
            settings[tool].add((str(r["requests"]), str(r["streams"]), str(r["threads"]), str(r["pinning"]).lower()))
            print(f"{i:>5}  {tool:<13} {r['count']:>6} {r['median']:>10.3f} {r['ips']:>9.1f} {r['requests']!s:>8} "
                  f"{r['streams']!s:>7} {r['threads']!s:>7} {str(r['pinning']):<7} {r['precision']}", flush=True)
    return verdict(mode, figures, settings, command, mode.harness_command(manifest, args.batch, args.threads,
                                                                          args.seconds))


def verdict(mode: Mode, figures: dict[str, list[float]], settings: dict[str, set], app_command: str,
            harness_command: str) -> bool:
    harness, app = statistics.median(figures["harness"]), statistics.median(figures["benchmark_app"])
    ratio = harness / app
    paired = sorted(h / a for h, a in zip(figures["harness"], figures["benchmark_app"], strict=True))
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else (paired[0],) * 3
    tolerance = TOLERANCE[mode.name]
    what = "median latency" if mode.figure == "median" else "images/s"
    print(f"\nbenchmark_app command: {app_command}")
    print(f"harness equivalent:    {harness_command}")
    print(f"median of round {what}: harness {harness:.3f} {mode.unit}, benchmark_app {app:.3f} {mode.unit}, "
          f"ratio harness/benchmark_app {ratio:.3f} ({ratio - 1:+.1%})")
    print(f"per-round ratios: median {statistics.median(paired):.3f}, interquartile {q1:.3f}..{q3:.3f}, "
          f"range {paired[0]:.3f}..{paired[-1]:.3f}; load average after: {_load()}")
    if settings["harness"] != settings["benchmark_app"]:
        print(f"WARNING: the tools ran different settings (requests, streams, threads, pinning): harness "
              f"{sorted(settings['harness'])}, benchmark_app {sorted(settings['benchmark_app'])}")
    ok = abs(ratio - 1) <= tolerance
    print(f"{'PASS' if ok else 'FAIL'}: target is the harness's {what} within {tolerance:.0%} of benchmark_app's")
    if q3 - q1 > tolerance:
        print(f"note: round-to-round noise (interquartile width {q3 - q1:.1%}) exceeds the tolerance here; "
              f"use a quiet machine or more rounds for a firmer verdict")
    return ok


def find_manifest(model: str, opset: int, artifacts: Path) -> Path:
    """The seeded dynamic-batch export, made in a child process when missing (paddle stays out of here)."""
    spec = ExportSpec(model, opset, "dynamic", "seeded", artifacts)
    return spec.manifest_path if spec.manifest_path.is_file() else launch_export(spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("latency", "throughput", "both"), default="both")
    parser.add_argument("--model", nargs="+", default=["MobileViT_XXS", "LeViT_128S"])
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--manifest", type=Path, help="use this exported model instead of --model/--opset")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="export folder")
    parser.add_argument("--threads", type=int, default=default_threads(), help="default: physical cores")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per round and tool")
    parser.add_argument("--rounds", type=int, default=6, help="alternations (short rounds spread load)")
    args = parser.parse_args()

    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        print("error: benchmark_app not found (it ships with the openvino package as a console script)",
              file=sys.stderr)
        return 1
    print_machine(args)
    manifests = [args.manifest] if args.manifest else [find_manifest(m, args.opset, args.artifacts)
                                                        for m in args.model]
    modes = ["latency", "throughput"] if args.mode == "both" else [args.mode]
    results = []
    for manifest in manifests:
        artifact = Artifact.from_manifest(manifest)
        for name in modes:
            results.append((artifact.model, name, compare(exe, MODES[name], artifact, manifest, args)))
    print("\nsummary: " + "; ".join(f"{model} {mode} {'PASS' if ok else 'FAIL'}" for model, mode, ok in results))
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
