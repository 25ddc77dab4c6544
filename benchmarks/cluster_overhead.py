"""What running a sweep's cells through a Ray cluster costs, and whether it moves the latency they measure.

On this machine: a Ray head (no cell) and one worker node with the single bench_slot, started here and ended by
their ids. The same sweep (one model x runtimes x batches) runs in rounds, locally and through the cluster, in
alternating order; each run is followed by its resume (nothing left to run), which is the fixed cost of a run
(start, config, for the cluster: connecting). Printed:

- dispatch overhead per cell: ((cluster run - cluster resume) - (local run - local resume)) / cells, per round
  (goal: <= 1 s per cell), and the cluster's fixed cost per sweep; the node's own share per cell (task wall time
  less the cell process) from the records' ``placement.seconds``;
- p50 latency of each cell, local vs through the cluster: the median over rounds of each, their ratio, and the
  A/A noise: how far the local rounds' p50s spread around their median (goal: the ratio within that spread).

    python benchmarks/cluster_overhead.py --model MobileViT_XXS --runtimes ort ov --batches 1 8 --rounds 5
    python benchmarks/cluster_overhead.py --manifest PATH/model.onnx.json --rounds 2 --duration 0.2   # tiny proof

A zoo model's export is made by the first run if missing (its time is not counted: a warm-up run exports first).
Run it alone on the machine: anything else busy moves both sides' figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from bench.harness.env import cpu_info  # noqa: E402
from bench.records import read_records  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="a zoo model (exported by the warm-up run if missing)")
    model.add_argument("--manifest", type=Path, help="a model's manifest (bring your own)")
    p.add_argument("--runtimes", nargs="+", default=["ort", "ov"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--duration", type=float, default=2.0, help="measure.min_duration_s of each cell")
    p.add_argument("--rounds", type=int, default=5, help="local and cluster runs each (alternating order)")
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts", help="where zoo exports are")
    return p.parse_args()


def write_config(args: argparse.Namespace, folder: Path) -> Path:
    sweep = {"runtimes": args.runtimes, "batches": args.batches, "opsets": [17], "drift": False}
    sweep.update({"models": [args.model]} if args.model else {"models": [], "manifests": [str(args.manifest)]})
    config = {"artifacts": str(args.artifacts), "results": str(folder / "unused.jsonl"), "sweep": sweep,
              "measure": {"warmup": 10, "iterations": 50, "min_duration_s": args.duration,
                          "max_duration_s": max(30.0, 5 * args.duration)}}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class OneNodeCluster:
    """A head without a slot and one worker node with the bench_slot, on this machine."""

    def __init__(self, folder: Path) -> None:
        from ray.cluster_utils import Cluster

        self.temp_dir = tempfile.mkdtemp(prefix="rco-", dir="/tmp")  # Ray's socket paths must stay short
        os.environ.update(RAY_worker_niceness="0", PADDLE_ONNX_BENCH_NODE_CACHE=str(folder / "node-cache"))
        store = 200 * 1024 * 1024
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": store,
                                                                      "temp_dir": self.temp_dir})
        self.cluster.add_node(num_cpus=0, object_store_memory=store, temp_dir=self.temp_dir,
                              resources={"bench_slot": 1})
        self.address = self.cluster.address

    def close(self) -> None:
        self.cluster.shutdown()
        deadline = time.monotonic() + 60
        while (left := _pids_naming(self.temp_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            os.kill(pid, 9)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _pids_naming(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def timed_sweep(config: Path, results: Path, cluster: str | None) -> float:
    """Wall seconds of ``python -m bench sweep`` (it must succeed)."""
    command = [sys.executable, "-m", "bench", "sweep", "--config", str(config), "--results", str(results)]
    command += ["--cluster", cluster] if cluster else []
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(command)} ended with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return wall


def run_rounds(args: argparse.Namespace, config: Path, folder: Path, address: str) -> list[dict]:
    timed_sweep(config, folder / "warm-up.jsonl", None)  # exports, the file cache, the engines' first import
    rounds = []
    for r in range(args.rounds):
        walls: dict[str, float] = {}
        order = ("local", "cluster") if r % 2 == 0 else ("cluster", "local")
        for side in order:
            results = folder / f"{side}-{r}.jsonl"
            where = address if side == "cluster" else None
            walls[side] = timed_sweep(config, results, where)
            walls[f"{side} resume"] = timed_sweep(config, results, where)
        rounds.append(walls)
    return rounds


def cell_records(folder: Path, side: str) -> list[list]:
    """Per round, the ok records of ``side``."""
    runs = sorted(folder.glob(f"{side}-*.jsonl"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [[r for r in read_records(path).valid() if r.status == "ok"] for path in runs]


def print_overhead(rounds: list[dict], cells: int, cluster_records: list[list]) -> None:
    per_cell = [((w["cluster"] - w["cluster resume"]) - (w["local"] - w["local resume"])) / cells for w in rounds]
    fixed = [w["cluster resume"] - w["local resume"] for w in rounds]
    node = [p["seconds"]["task"] - p["seconds"]["cell_process"]
            for run in cluster_records for p in (r.placement for r in run)]
    print(f"dispatch overhead per cell (goal <= 1 s): median {statistics.median(per_cell):+.3f} s, "
          f"rounds {', '.join(f'{x:+.3f}' for x in per_cell)}")
    print(f"cluster's fixed cost per sweep (connect, resume reading): median {statistics.median(fixed):+.3f} s")
    print(f"the node's own share per cell (unpack, launch, read back): median {statistics.median(node):.3f} s, "
          f"max {max(node):.3f} s")
    local_s = statistics.median(w["local"] - w["local resume"] for w in rounds) / cells
    print(f"  (a local cell takes {local_s:.2f} s here: process start, load, warm-up, timed loop)")


def p50s(runs: list[list]) -> dict[tuple, list[float]]:
    found: dict[tuple, list[float]] = {}
    for run in runs:
        for r in run:
            found.setdefault(r.cell_key, []).append(r.timing.latency("p50"))
    return found


def print_latency(local_runs: list[list], cluster_runs: list[list]) -> None:
    local, cluster = p50s(local_runs), p50s(cluster_runs)
    contended = sum(r.contended for run in local_runs + cluster_runs for r in run)
    print(f"\np50 latency, local vs cluster (medians over rounds; A/A noise: the local rounds' widest spread "
          f"around their median){'; ' + str(contended) + ' record(s) contended' if contended else ''}")
    print(f"{'cell':<36} {'local ms':>9} {'cluster ms':>10} {'ratio':>7} {'A/A noise':>10}  verdict")
    for key, values in local.items():
        theirs = cluster.get(key)
        if not theirs:
            continue
        mine, other = statistics.median(values), statistics.median(theirs)
        noise = max(abs(math.log(v / mine)) for v in values)
        ratio = other / mine
        verdict = ("no A/A noise from one round" if len(values) < 2 else
                   "within A/A noise" if abs(math.log(ratio)) <= noise else "outside A/A noise")
        label = f"{key[0]} {key[3]} {key[4]} b{key[2]}"
        print(f"{label:<36} {mine:>9.3f} {other:>10.3f} {ratio:>7.3f} {f'±{100 * (math.exp(noise) - 1):.1f} %':>10}"
              f"  {verdict}")


def header(args: argparse.Namespace) -> None:
    cpu = cpu_info()
    flags = ", ".join(f for f in FLAGS if (cpu.get("flags") or {}).get(f)) or "none of those probed"
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {cpu['model']}, {cpu['logical_cores']} logical / {cpu['physical_cores']} physical cores; "
          f"CPU flags: {flags}; {platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; rounds: {args.rounds}; min duration per cell: "
          f"{args.duration} s; one Ray worker node with the bench_slot on this machine\n")


def main() -> None:
    args = parse_args()
    header(args)
    folder = Path(tempfile.mkdtemp(prefix="cluster-overhead-"))
    config = write_config(args, folder)
    cluster = OneNodeCluster(folder)
    try:
        rounds = run_rounds(args, config, folder, cluster.address)
    finally:
        cluster.close()
    local_runs, cluster_runs = cell_records(folder, "local"), cell_records(folder, "cluster")
    cells = len(local_runs[0])
    print_overhead(rounds, cells, cluster_runs)
    print_latency(local_runs, cluster_runs)
    print(f"\nrecords: {folder}")
    print(json.dumps({"rounds": rounds}, indent=None))


if __name__ == "__main__":
    main()
