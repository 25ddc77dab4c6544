"""The harness's OpenVINO latency against OpenVINO's own ``benchmark_app`` on the same ONNX file.

Both run CPU, f32 inference precision, 1 stream, N threads, static shape [batch, 3, H, W], synchronous
infer calls, inputs filled once outside the timed loop, for the same number of seconds. The rounds alternate
(harness, benchmark_app, harness, ...) so drift in machine load hits both. Acceptance: the harness's median
within 5% of benchmark_app's.

benchmark_app only accepts -nstreams/-nthreads with ``-hint none``; the harness asks for the latency hint
with NUM_STREAMS=1 and INFERENCE_NUM_THREADS=N, which is the same configuration (both are read back below).

    python benchmarks/ov_vs_benchmark_app.py [--model MobileViT_XXS] [--opset 17] [--batch 1]
        [--seconds 5] [--rounds 6] [--threads N]
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
from pathlib import Path

# Run from a checkout: make the repo importable even when the editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.env import cpu_info, package_versions  # noqa: E402
from bench.harness.measure import MeasureParams, measure  # noqa: E402
from core.artifact import Artifact  # noqa: E402
from runtimes import get_runtime  # noqa: E402
from runtimes.base import RuntimeOptions  # noqa: E402
from runtimes.host import default_threads  # noqa: E402

TOLERANCE = 0.05
_FIELDS = {  # benchmark_app's report lines
    "count": r"Count:\s+(\d+)", "median": r"Median:\s+([\d.]+) ms", "mean": r"Average:\s+([\d.]+) ms",
    "min": r"Min:\s+([\d.]+) ms", "streams": r"NUM_STREAMS: (\S+)",
    "threads": r"INFERENCE_NUM_THREADS: (\S+)", "precision": r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>",
}


def benchmark_app_round(exe: str, artifact: Artifact, batch: int, threads: int, seconds: float) -> dict:
    shape = f"{artifact.input_name}{[batch, *artifact.input_shape[1:]]}".replace(" ", "")
    cmd = [exe, "-m", str(artifact.onnx_path), "-d", "CPU", "-hint", "none", "-infer_precision", "f32",
           "-nstreams", "1", "-nthreads", str(threads), "-shape", shape,
           "-t", f"{seconds:g}", "-api", "sync"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = {k: re.search(p, out) for k, p in _FIELDS.items()}
    missing = [k for k in ("count", "median") if not found[k]]
    if missing:
        raise RuntimeError(f"benchmark_app output lacks {missing}:\n{out[-2000:]}")
    result = {k: m.group(1) for k, m in found.items() if m}
    for k in ("median", "mean", "min"):
        result[k] = float(result[k]) if k in result else None
    result["count"] = int(result["count"])
    result["command"] = " ".join(cmd)
    return result


def harness_round(artifact: Artifact, batch: int, threads: int, seconds: float) -> dict:
    options = RuntimeOptions(device="cpu", precision="fp32", threads=threads, batch=batch,
                             extra={"hint": "latency", "streams": 1})
    # No warm-up beyond the (excluded) first run, as benchmark_app does.
    params = MeasureParams(warmup=0, iterations=1, min_duration_s=seconds, max_duration_s=seconds * 3)
    runtime = get_runtime("ov")(options)
    try:
        result = measure(runtime, artifact, batch, params)
    finally:
        runtime.close()
    eff = runtime.effective
    return {"count": result.latency.count, "median": result.latency.p50, "mean": result.latency.mean,
            "min": result.latency.min, "streams": eff.get("num_streams"),
            "threads": eff.get("inference_num_threads"), "precision": eff.get("inference_precision_hint")}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="MobileViT_XXS")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--manifest", type=Path, help="use this exported model instead of --model/--opset")
    parser.add_argument("--threads", type=int, default=default_threads(), help="default: physical cores")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per round and tool")
    parser.add_argument("--rounds", type=int, default=6, help="alternations (short rounds spread load)")
    args = parser.parse_args()

    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    if not Path(exe).exists():
        print("error: benchmark_app not found (it ships with the openvino package)", file=sys.stderr)
        return 1
    manifest = args.manifest
    if manifest is None:
        from export.pipeline import artifact_dir, ensure_export

        manifest = artifact_dir(args.model, args.opset) / "model.onnx.json"
        if not manifest.is_file():  # export only when missing: ensure_export imports paddle into this process
            manifest = ensure_export(args.model, args.opset)
    artifact = Artifact.from_manifest(manifest)

    cpu = cpu_info()
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {cpu['model']}, {cpu['logical_cores']} logical / {cpu['physical_cores']} physical "
          f"cores, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
          f"openvino {package_versions(('openvino',))['openvino']}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {_load()}")
    print(f"# model: {artifact.model} opset {artifact.opset} ({manifest}), batch {args.batch}, "
          f"threads {args.threads}, {args.seconds:g} s per round, {args.rounds} rounds")
    print()
    print(f"{'round':>5}  {'tool':<13} {'count':>6} {'median ms':>10} {'mean ms':>8} {'min ms':>7}  "
          f"streams threads precision")
    medians: dict[str, list[float]] = {"harness": [], "benchmark_app": []}
    command = ""
    for i in range(1, args.rounds + 1):
        for tool in ("harness", "benchmark_app"):
            if tool == "harness":
                r = harness_round(artifact, args.batch, args.threads, args.seconds)
            else:
                r = benchmark_app_round(exe, artifact, args.batch, args.threads, args.seconds)
                command = r["command"]
            medians[tool].append(r["median"])
            print(f"{i:>5}  {tool:<13} {r['count']:>6} {r['median']:>10.3f} {r['mean'] or 0:>8.3f} "
                  f"{r['min'] or 0:>7.3f}  {r['streams']!s:>7} {r['threads']!s:>7} {r['precision']}",
                  flush=True)
    harness = statistics.median(medians["harness"])
    app = statistics.median(medians["benchmark_app"])
    ratio = harness / app
    print()
    print(f"benchmark_app command: {command}")
    print(f"median of round medians: harness {harness:.3f} ms, benchmark_app {app:.3f} ms, "
          f"ratio {ratio:.3f} ({ratio - 1:+.1%})")
    # Adjacent rounds share the machine's state, so their ratios show the noise the verdict lives with.
    paired = sorted(h / a for h, a in zip(medians["harness"], medians["benchmark_app"], strict=True))
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else (paired[0],) * 3
    print(f"per-round ratios harness/benchmark_app: median {statistics.median(paired):.3f}, "
          f"interquartile {q1:.3f}..{q3:.3f}, range {paired[0]:.3f}..{paired[-1]:.3f}")
    print(f"load average after: {_load()}")
    verdict = "PASS" if abs(ratio - 1) <= TOLERANCE else "FAIL"
    print(f"{verdict}: target is the harness within {TOLERANCE:.0%} of benchmark_app")
    if q3 - q1 > TOLERANCE:
        print(f"note: round-to-round noise (interquartile width {q3 - q1:.1%}) exceeds the tolerance on this "
              f"machine; add rounds for a firmer verdict")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
