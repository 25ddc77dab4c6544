"""Per-iteration overhead of the harness's timed loop, measured with the null runtime (run() does nothing).

What a sample of a real runtime contains besides its own work: two ``perf_counter_ns`` calls, the bound
``run()`` call through the lifecycle check, and (end2end scope) ``prepare`` + ``outputs``. The wall time per
iteration also includes the loop bookkeeping (append, device-time read, stop checks) that lies outside the
samples but inside the throughput figure.

    python benchmarks/harness_overhead.py [--duration 3] [--iterations 200000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Run from a checkout: make the repo importable even when the editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.env import cores_line, cpu_info
from bench.harness.measure import MeasureParams, measure
from core.artifact import Artifact
from core.manifest import Manifest, ModelFile, TensorSpec
from runtimes.base import RuntimeOptions
from runtimes.null import NullRuntime

# A manifest-only artifact: the null runtime reads shapes from it and never opens a file.
ARTIFACT = Artifact(
    Manifest(model="null-224", opset_requested=17, opset_written=17,
             graph=ModelFile(file="/dev/null", sha256="", inputs=[TensorSpec("x", ["batch", 3, 224, 224])],
                             outputs=[TensorSpec("logits", ["batch", 1000])])),
    root=Path("/"),
)


def clock_cost_ns(n: int = 200_000) -> np.ndarray:
    """Back-to-back perf_counter_ns differences: the floor under any sample."""
    clock = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = clock()
        out[i] = clock() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="minimum seconds per scope")
    parser.add_argument("--iterations", type=int, default=200_000, help="minimum iterations per scope")
    args = parser.parse_args()

    cpu = cpu_info()
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {cores_line(cpu)}, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print()
    floor = clock_cost_ns()
    print(f"perf_counter_ns back-to-back: p50 {np.percentile(floor, 50):.0f} ns, "
          f"p99 {np.percentile(floor, 99):.0f} ns")
    print()
    print(f"{'scope':<8} {'batch':>5} {'iterations':>10} {'p50 ns':>8} {'p99 ns':>8} {'mean ns':>8} "
          f"{'wall ns/iter':>12}")
    for scope, batch in (("compute", 1), ("end2end", 1), ("end2end", 8)):
        params = MeasureParams(warmup=1000, iterations=args.iterations, min_duration_s=args.duration,
                               max_duration_s=10 * args.duration + 60, scope=scope)
        result = measure(NullRuntime(RuntimeOptions(batch=batch)), ARTIFACT, batch, params)
        samples = np.asarray(result.samples_ns)
        print(f"{scope:<8} {batch:>5} {len(samples):>10} {np.percentile(samples, 50):>8.0f} "
              f"{np.percentile(samples, 99):>8.0f} {samples.mean():>8.0f} "
              f"{result.wall_s * 1e9 / len(samples):>12.0f}")
    print()
    print("end2end includes the null runtime's prepare() and outputs() (a copy of the zero logits), so it")
    print("grows with batch; compute is the overhead inside every compute-scope sample of a real runtime.")


if __name__ == "__main__":
    main()
