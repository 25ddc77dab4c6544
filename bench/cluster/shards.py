"""An accuracy pass over shards on a Ray cluster (``python -m bench accuracy --cluster ADDRESS [--shards N]``).

The driver lists the data set (no decoding: each node checks its own images), makes the export if missing and
ships it once (``artifacts``), cuts the image list into contiguous shards at multiples of the batch, and runs
each shard as a Ray task on a node of the target that holds the node's ``bench_slot`` (so no timed cell runs
beside it, and a node works on one shard at a time with all its cores). On the node the shard runs in a process
of its own, ``python -m bench.labelled_pass``: the code of a one-machine pass, on fewer images. Per-image
results come back; the driver merges them by image name into the data set's order, and every statistic is
computed once, on the merged set.

Images are read on each node at the driver's path (a shared or copied data set), or, with ``--ship-images``,
sent by the driver through the object store a shard at a time, each file's sha256 checked on arrival. A shard
whose node dies runs once more on another node of the target; a shard that fails on its own (its images, the
node's runtime) stops the pass with one line naming the node, and nothing is recorded of a partial set.
"""

from __future__ import annotations

import math
import pickle
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from bench.accuracy.per_image import ImageResults, merge
from bench.cell import BenchFailure, resolve_manifest
from bench.cluster.artifacts import Bundle, node_cache, pack, pack_files, unpack
from bench.cluster.connect import Cluster, get_result, import_ray
from bench.cluster.dispatch import WATCH_S, failure_of
from bench.cluster.node import CHECKOUT, NodeFailure, launch_environment, this_node
from bench.cluster.placement import run_on_target
from bench.labelled_pass import ShardJob, check_paddle_model
from bench.request import BenchRequest
from bench.table import one_line
from bench.targets import TargetSpec
from core.artifact import Artifact
from core.datasets import DataError, ImageDataset
from core.proc import Terminated, describe_exit, python_module, run_child, terminated_by
from core.progress import image_bar

IN_FLIGHT_PER_NODE = 2  # shards handed to Ray per node: one running, the next one's images on their way
SHARED_PATH = "read on each node at the driver's path"
SHIPPED = "shipped through the object store, sha256-checked on arrival"


def split(count: int, shards: int, batch: int) -> list[range]:
    """Contiguous shards of ``count`` images as even as whole batches allow: each cut at a multiple of ``batch``,
    so an image meets the runtime in the same batch as in a one-machine pass. Never an empty shard."""
    batches = math.ceil(count / batch)
    shards = max(1, min(shards, batches))
    per, extra = divmod(batches, shards)
    ranges, start = [], 0
    for i in range(shards):
        stop = min(count, start + (per + (i < extra)) * batch)
        ranges.append(range(start, stop))
        start = stop
    return ranges


# --- on the node ----------------------------------------------------------------------------------------------

def run_shard_on_node(job: ShardJob, export: Bundle, images: Bundle | None, attempt: int) -> dict:
    """The Ray task of one shard: its outcome (``bench.labelled_pass.run_job``'s, or ``{"error"}``) with the
    node's facts. A failure outside the shard's own work is a NodeFailure naming the node."""
    node, started = this_node(), time.monotonic()
    try:
        cache = node_cache()
        manifest, arrived = unpack(export, cache)
        if images is not None:
            folder, _ = unpack(images, cache)
            job = replace(job, root=str(folder), samples=[replace(s, path=folder / _shipped_name(i, s.path))
                                                          for i, s in enumerate(job.samples)])
        target = replace(job.request.target, shipped_manifest=str(manifest), artifacts=str(cache / "artifacts"))
        outcome = _run_child(replace(job, request=replace(job.request, target=target)), cache)
    except Exception as exc:
        raise NodeFailure(node["node_id"], f"{type(exc).__name__} on {node['node_host']} ({node['node_ip']}): "
                                           f"{exc}") from exc
    return {**outcome, "node": node, "attempt": attempt, "export_arrived_from": arrived,
            "seconds": round(time.monotonic() - started, 3)}


def _run_child(job: ShardJob, cache: Path) -> dict:
    """Run the shard in a process of its own, in the environment the node was started with (as a cell runs)."""
    (cache / "scratch").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shard-", dir=cache / "scratch"))
    try:
        (work / "job.pkl").write_bytes(pickle.dumps(job))
        child = run_child(python_module("bench.labelled_pass", str(work / "job.pkl"), str(work / "out.pkl")),
                          None, cwd=CHECKOUT, env=launch_environment(), capture_stdout=False)
        if not (work / "out.pkl").is_file():
            return {"error": f"the shard's process ended with {describe_exit(child.returncode)}: "
                             f"{child.error_line or 'no message'}"}
        return pickle.loads((work / "out.pkl").read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _shipped_name(position: int, path: Path) -> str:
    """A shard's image inside its bundle: by position (a listed name may hold ``..``), with its suffix."""
    return f"{position:06d}{path.suffix}"


# --- on the driver --------------------------------------------------------------------------------------------

@dataclass
class Shard:
    job: ShardJob
    images: range  # positions in the data set
    attempt: int = 1
    avoid: tuple[str, ...] = ()  # the node it failed on
    retry_of: dict | None = None


class ShardedPass:
    """Hand the shards to the nodes of ``target``, retry one whose node died once elsewhere, gather outcomes."""

    def __init__(self, cluster: Cluster, target: TargetSpec, ship: bool, bar: tqdm) -> None:
        self.cluster, self.target, self.ship, self.bar = cluster, target, ship, bar
        self.outcomes: dict[int, dict] = {}

    def run(self, shards: list[Shard], export: Bundle) -> list[dict]:
        ray = import_ray()
        queue, pending = deque(shards), {}
        limit = IN_FLIGHT_PER_NODE * max(1, len(self.cluster.offering(self.target)))
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    shard = queue.popleft()
                    images = self._images(shard.job) if self.ship else None
                    pending[run_on_target(run_shard_on_node, shard.job, export, images, shard.attempt,
                                          target=self.target, avoid=shard.avoid)] = shard
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WATCH_S)
                for ref in ready:
                    self._settle(pending.pop(ref), ref, queue, len(shards))
                if not ready and not self.cluster.offering(self.target):
                    raise BenchFailure(f"no live node of the cluster offers target {self.target.name} "
                                       f"({self.target.describe()}) any more; nodes: {self.cluster.describe_nodes()}")
        except BaseException as exc:
            for ref in pending:
                ray.cancel(ref, force=True)  # the worker dies, and the shard's process with it
            signum = terminated_by()
            if isinstance(exc, KeyboardInterrupt) and signum and not isinstance(exc, Terminated):
                raise Terminated(signum) from None  # ray.wait turned the SIGTERM into a plain Ctrl-C
            raise
        return [self.outcomes[i] for i in sorted(self.outcomes)]

    @staticmethod
    def _images(job: ShardJob) -> Bundle:
        return pack_files({_shipped_name(i, s.path): s.path.read_bytes() for i, s in enumerate(job.samples)})

    def _settle(self, shard: Shard, ref, queue: deque, total: int) -> None:
        label = f"shard {shard.job.index + 1} of {total}"
        try:
            outcome = get_result(ref)
        except Exception as exc:
            node_id, kind, why = failure_of(exc)
            node = self.cluster.known.get(node_id or "")
            where = node.name if node else f"node {node_id}" if node_id else "an unknown node"
            avoid = (node_id,) if node_id else ()
            if shard.attempt == 1 and self.cluster.offering(self.target, avoid):
                self.bar.write(f"retry: {label}: {why}; running it once more on another node of target "
                               f"{self.target.name}", file=sys.stderr)
                queue.appendleft(replace(shard, attempt=2, avoid=avoid,
                                         retry_of={"node": where, "node_id": node_id, "error": f"{kind}: {why}"}))
                return
            then = "no other live node of the target can retry it" if shard.attempt == 1 else "it failed on its retry"
            raise BenchFailure(f"{label} failed on {where}: {kind}: {why} ({then})") from None
        if "error" in outcome:
            host = outcome["node"]["node_host"]
            raise BenchFailure(f"{label} failed on {host} ({outcome['node']['node_ip']}): {one_line(outcome['error'])}")
        outcome["retry_of"] = shard.retry_of
        outcome["positions"] = [shard.images.start, shard.images.stop]
        self.outcomes[shard.job.index] = outcome
        self.bar.update(len(shard.images))


def run_sharded(cluster: Cluster, target: TargetSpec, request: BenchRequest, dataset: ImageDataset,
                shards: int | None, ship: bool, drift: bool,
                workers: int | None) -> tuple[Artifact, ImageResults, dict, dict]:
    """The pass over ``dataset`` on the cluster: (the export, merged per-image results, the runtime section of the
    record, its ``cluster`` section). The export is made here if missing, as a one-machine pass makes it.
    ``workers``: image worker processes per shard (None: one per core of its node)."""
    manifest = resolve_manifest(request)
    artifact = Artifact.from_manifest(manifest, verify=True)
    if drift:
        check_paddle_model(artifact)
    nodes = cluster.offering(target)
    ranges = split(len(dataset), shards or len(nodes), request.batch)
    jobs = [Shard(ShardJob(i, request, dataset.kind, str(dataset.root), dataset.samples[r.start:r.stop],
                           dataset.preprocess, drift, workers), r) for i, r in enumerate(ranges)]
    with image_bar(len(dataset), f"{len(ranges)} shards on {len(nodes)} node(s)") as bar:
        outcomes = ShardedPass(cluster, target, ship, bar).run(jobs, pack(manifest, with_images=False))
    results = merge([o["results"] for o in outcomes], order=dataset.names())
    if not len(results):
        first = results.unreadable[0]
        raise DataError(f"{dataset.root}: none of the {len(dataset)} images can be read "
                        f"(first: {first['path']}: {first['reason']})")
    _name_as_listed(results, dataset)
    runtime = next(o["runtime"] for o in outcomes if o["runtime"] is not None)
    return artifact, results, runtime, cluster_section(cluster, target, ship, outcomes)


def _name_as_listed(results: ImageResults, dataset: ImageDataset) -> None:
    """Unreadable images by their path on the driver (a shipped image was read from a node's cache), and the data
    set told what its shards found, so the record describes it as a one-machine pass does."""
    paths = {s.name: str(s.path) for s in dataset.samples}
    for entry in results.unreadable:
        entry["path"] = paths[entry["name"]]
    dataset.skipped = list(results.unreadable)
    dataset.unreadable = {u["name"]: u["reason"] for u in results.unreadable}
    dataset.enlarged = list(results.enlarged)


def cluster_section(cluster: Cluster, target: TargetSpec, ship: bool, outcomes: list[dict]) -> dict:
    """What the record says of where the shards ran: each shard's images, node, CPU, attempt and seconds."""
    shards = [{"index": i, "images": o["positions"], "measured": len(o["results"]),
               "unreadable": len(o["results"].unreadable), **o["node"], "cpu": o["cpu"],
               "attempt": o["attempt"], "retry_of": o["retry_of"], "export_arrived_from": o["export_arrived_from"],
               "seconds": o["seconds"], "effective": (o["runtime"] or {}).get("effective")}
              for i, o in enumerate(outcomes)]
    cpus = {(s["cpu"]["model"], tuple(s["cpu"]["flags"])) for s in shards}
    if len(cpus) > 1:
        tqdm.write(f"warning: the shards ran on {len(cpus)} kinds of CPU ({', '.join(sorted(c[0] for c in cpus))}); "
                   "the figures pool them: name one kind with --target", file=sys.stderr)
    return {"address": cluster.address, "target": target.name, "shards": len(shards),
            "images": SHIPPED if ship else SHARED_PATH, "mixed_cpus": len(cpus) > 1, "per_shard": shards}
