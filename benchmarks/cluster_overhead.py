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

With ``--accuracy``, the accuracy pass instead (``python -m bench accuracy --drift``: the first of --runtimes at
the largest of --batches, with Paddle's reference) on ``--images`` labelled images (the bundled ones, repeated):
images/s here, then through the cluster with 1 and with 2 worker nodes (one shard per node), each also on one
batch of images for its fixed cost (start, connect, load); whether the cluster's figures equal the local ones;
and the time projected for 50,000 images on N nodes, each a machine like this one:

    python benchmarks/cluster_overhead.py --accuracy --model LeViT_128S --runtimes ov --batches 8 --images 2000

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

from bench.harness.env import cores_line, cpu_info  # noqa: E402
from bench.records import read_records  # noqa: E402

STORE = 200 * 1024 * 1024  # each node's object store
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
    p.add_argument("--accuracy", action="store_true", help="the accuracy pass: here, on 1 and on 2 worker nodes")
    p.add_argument("--images", type=int, default=2000, help="--accuracy: labelled images (default 2000)")
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


class LocalCluster:
    """A head without a slot and worker nodes with the bench_slot, on this machine (one to start with)."""

    def __init__(self, folder: Path) -> None:
        from ray.cluster_utils import Cluster

        self.temp_dir = tempfile.mkdtemp(prefix="rco-", dir="/tmp")  # Ray's socket paths must stay short
        os.environ.update(RAY_worker_niceness="0", PADDLE_ONNX_BENCH_NODE_CACHE=str(folder / "node-cache"))
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE,
                                                                      "temp_dir": self.temp_dir})
        self.add_worker()
        self.address = self.cluster.address

    def add_worker(self) -> None:
        self.cluster.add_node(num_cpus=0, object_store_memory=STORE, temp_dir=self.temp_dir,
                              resources={"bench_slot": 1})

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
    print(f"# machine: {cores_line(cpu)}; "
          f"CPU flags: {flags}; {platform.system()} {platform.release()}, Python {platform.python_version()}")
    what = (f"accuracy pass on {args.images} images" if args.accuracy else
            f"rounds: {args.rounds}; min duration per cell: {args.duration} s; one Ray worker node with the bench_slot")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {what}; on this machine\n")


# --- the accuracy pass ------------------------------------------------------------------------------------------

def accuracy_pass(args: argparse.Namespace, data: Path, results: Path, cluster: str | None) -> tuple[float, dict]:
    """Wall seconds of ``python -m bench accuracy --drift`` over ``data`` (it must succeed), and its record."""
    model = ["--model", args.model] if args.model else ["--manifest", str(args.manifest)]
    command = [sys.executable, "-m", "bench", "accuracy", "--runtime", args.runtimes[0], *model, "--data", str(data),
               "--batch", str(max(args.batches)), "--drift", "--quiet", "--results", str(results),
               "--artifacts", str(args.artifacts), *(["--cluster", cluster] if cluster else [])]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(command)} ended with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return wall, json.loads(results.read_text().splitlines()[-1])


def accuracy_runs(args: argparse.Namespace, folder: Path) -> dict[str, dict]:
    """Per place (here, 1 node, 2 nodes): the wall seconds on one batch (fixed cost) and on all images, and the
    record of the whole pass."""
    from accuracy_pass import image_set

    classes = (json.loads(args.manifest.read_text()).get("num_classes") if args.manifest else None) or 1000
    full = image_set(args.images, folder / "full", classes)
    small = image_set(max(args.batches), folder / "one-batch", classes)
    accuracy_pass(args, small, folder / "warm-up.jsonl", None)  # the export, the file cache, first imports
    runs: dict[str, dict] = {}

    def measure(place: str, address: str | None) -> None:
        fixed, _ = accuracy_pass(args, small, folder / f"{place}-fixed.jsonl", address)
        wall, record = accuracy_pass(args, full, folder / f"{place}.jsonl", address)
        runs[place] = {"fixed": fixed, "wall": wall, "record": record}

    measure("here", None)
    cluster = LocalCluster(folder)
    try:
        accuracy_pass(args, small, folder / "node-warm-up.jsonl", cluster.address)  # the node cache
        measure("1 worker node", cluster.address)
        cluster.add_worker()
        measure("2 worker nodes", cluster.address)
    finally:
        cluster.close()
    return runs


def print_accuracy(args: argparse.Namespace, runs: dict[str, dict]) -> None:
    here = runs["here"]["record"]
    print(f"accuracy pass: {args.images} images, {args.runtimes[0]} fp32 batch {max(args.batches)}, with Paddle's "
          "reference (--drift); one shard per worker node")
    print(f"{'where':<16} {'wall s':>8} {'fixed s':>8} {'img/s':>7} {'img/s less fixed':>17}  figures as here")
    for place, run in runs.items():
        rate = args.images / run["wall"]
        net = args.images / max(run["wall"] - run["fixed"], 1e-9)
        same = all(run["record"].get(k) == here.get(k) for k in ("accuracy", "drift", "data"))
        print(f"{place:<16} {run['wall']:>8.1f} {run['fixed']:>8.1f} {rate:>7.1f} {net:>17.1f}  "
              f"{'equal' if same else 'DIFFERENT'}")
    cores = os.cpu_count()
    one_rate, two_rate = (args.images / runs[place]["wall"] for place in ("1 worker node", "2 worker nodes"))
    print(f"\nThe worker nodes share this machine's {cores} logical cores, so 2 nodes here are not 2 machines: "
          + (f"their {two_rate / one_rate:.2f}x over 1 node is two shards filling each other's idle moments (one "
             "shard's pass, decoding workers, runtime and Paddle in turn, leaves the cores idle at times), not "
             "a second machine's gain." if two_rate > one_rate else
             "they show the cost of splitting (both shards want every core), not its gain."))
    one = runs["1 worker node"]
    per_node = args.images / max(one["wall"] - one["fixed"], 1e-9)
    print(f"Projection for 50,000 images (each node a machine like this one at {per_node:.1f} images/s, the data on "
          f"a shared path; {one['fixed']:.1f} s fixed, once):")
    local = runs["here"]
    local_rate = args.images / max(local["wall"] - local["fixed"], 1e-9)
    print(f"  here, no cluster: {(local['fixed'] + 50_000 / local_rate) / 60:.1f} min")
    for nodes in (1, 2, 4, 8, 16):
        print(f"  {nodes:>2} node(s): {(one['fixed'] + 50_000 / (nodes * per_node)) / 60:.1f} min")


def main() -> None:
    args = parse_args()
    header(args)
    folder = Path(tempfile.mkdtemp(prefix="cluster-overhead-"))
    if args.accuracy:
        sys.path.insert(0, str(ROOT / "benchmarks"))  # accuracy_pass.image_set
        print_accuracy(args, accuracy_runs(args, folder))
        print(f"\nrecords: {folder}")
        return
    config = write_config(args, folder)
    cluster = LocalCluster(folder)
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
