"""Which way of keeping ONNX Runtime busy gives the most images/s: one request at a time (the latency
scenario), N concurrent ``run()`` calls on one session with the intra-op threads split among them (the
throughput scenario's default, ``concurrency=threads``), or N ``run_async`` calls sharing the session's intra-op
pool (``concurrency=run_async``). The configurations alternate round by round, so drift in machine load hits
all of them; the table gives the median images/s and p50 latency of a request per configuration. Run it on a
quiet machine; its figures are the evidence for the adapter's default.

    python benchmarks/ort_concurrency.py [--model MobileViT_XXS LeViT_128S] [--batch 1] [--seconds 3]
        [--rounds 5] [--threads N] [--artifacts DIR]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
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


def configurations(threads: int) -> dict[str, dict]:
    """Name -> RuntimeOptions keywords; requests from 2 up to the threads, and run_async where it can run."""
    found = {"latency": {}}
    for requests in sorted({2, threads} | ({threads // 2} if threads >= 4 else set())):
        if requests >= 2:
            found[f"threads x{requests}"] = {"scenario": "throughput", "requests": requests}
    if threads >= 2:
        found[f"run_async x{threads}"] = {"scenario": "throughput", "requests": threads,
                                          "extra": {"concurrency": "run_async"}}
    return found


def one_round(artifact: Artifact, batch: int, threads: int, seconds: float, options: dict) -> tuple[float, float]:
    runtime = get_runtime("ort")(RuntimeOptions(threads=threads, batch=batch, **options))
    try:
        result = measure(runtime, artifact, batch,
                         MeasureParams(warmup=5, iterations=1, min_duration_s=seconds, max_duration_s=3 * seconds))
    finally:
        runtime.close()
    return result.throughput_ips, result.latency.p50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["MobileViT_XXS", "LeViT_128S"])
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=default_threads(), help="default: physical cores")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {cores_line(cpu)}, "
          f"{platform.system()} {platform.release()}, onnxruntime {package_versions(('onnxruntime',))['onnxruntime']}")
    configs = configurations(args.threads)
    for model in args.model:
        spec = ExportSpec(model, args.opset, "dynamic", "seeded", args.artifacts)
        artifact = Artifact.from_manifest(spec.manifest_path if spec.manifest_path.is_file() else launch_export(spec))
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, options in configs.items():
                figures[name].append(one_round(artifact, args.batch, args.threads, args.seconds, options))
        print(f"\n## {model}, batch {args.batch}, {args.threads} threads, {args.rounds} rounds of {args.seconds:g} s\n")
        print(f"{'configuration':<16} {'images/s':>9} {'vs latency':>10} {'p50 ms':>8}")
        base = statistics.median(ips for ips, _ in figures["latency"])
        for name, rows in figures.items():
            ips = statistics.median(i for i, _ in rows)
            print(f"{name:<16} {ips:>9.1f} {ips / base:>9.2f}x {statistics.median(p for _, p in rows):>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
