"""The CPU's fp32 multiply-add peak, measured: ``fma_peak.c`` built with the system's C compiler and run.

An sgemm reading (``graph_flops.sgemm_peak``) is what a BLAS reaches on the day, below the hardware's limit; a
ceiling computed from it could be lifted by a better kernel. This probe runs independent FMA chains on the widest
vectors the CPU has, on every thread, with no memory traffic: no fp32 kernel can do more multiply-adds per second.
So a target above the ceiling at this peak cannot be met on this CPU by any fp32 kernel that does the model's
multiply-adds (only an algorithm with fewer of them, such as Winograd convolution, could).

    python benchmarks/fma_peak.py [--threads N] [--out results/fma_peak.json]

Needs a C compiler (``cc``); without one it says so and exits 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.env import cpu_info, cpu_name
from core.cores import default_threads
from core.cpu import cpu_flags, describe
from core.files import write_json_atomic

SOURCE = Path(__file__).with_name("fma_peak.c")


class FmaProbeUnavailable(RuntimeError):
    """No C compiler, a build that failed, or a CPU without AVX2/FMA; the message says which."""


def fma_peak(threads: int) -> dict:
    """Build and run the probe on ``threads`` threads; its JSON: isa, clock_ghz, gflops (all threads),
    gflops_one_thread, flop_per_cycle_one_thread."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise FmaProbeUnavailable("no C compiler (cc, gcc or clang) on PATH to build benchmarks/fma_peak.c")
    with tempfile.TemporaryDirectory(prefix="fma-peak-") as tmp:
        binary = Path(tmp) / "fma_peak"
        built = subprocess.run([compiler, "-O2", "-pthread", str(SOURCE), "-o", str(binary)],
                               capture_output=True, text=True)
        if built.returncode:
            raise FmaProbeUnavailable(f"{compiler} could not build {SOURCE.name}: {built.stderr.strip()[:300]}")
        ran = subprocess.run([str(binary), str(threads)], capture_output=True, text=True)
    if ran.returncode:
        raise FmaProbeUnavailable(f"{SOURCE.name} failed: {ran.stderr.strip()}")
    return json.loads(ran.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--out", type=Path, help="also write the figures, with the CPU, as JSON")
    args = parser.parse_args(argv)
    try:
        peak = fma_peak(args.threads)
    except FmaProbeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    flags, cpu = cpu_flags(), cpu_info()
    print(f"CPU: {cpu_name(cpu)}; {describe(flags)}")
    print(f"{peak['isa']} FMA peak: {peak['gflops']:.1f} GFLOP/s fp32 on {peak['threads']} thread(s) "
          f"({peak['gflops_one_thread']:.1f} on one; clock read {peak['clock_ghz']:.2f} GHz, "
          f"{peak['flop_per_cycle_one_thread']:.1f} flop/cycle per thread)")
    if args.out:
        write_json_atomic(args.out, {**peak, "cpu": cpu_name(cpu), "cpu_flags": flags})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
