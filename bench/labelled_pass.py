"""One runtime over a labelled data set, and Paddle's reference on the same tensors when asked: the per-image
results that ``bench.accuracy.per_image.merge`` joins and ``bench.accuracy.statistics`` judges.

The one code path of a pass, whether it covers the whole set (``python -m bench accuracy`` on this machine) or
one shard of it: on a cluster's node, ``python -m bench.labelled_pass JOB OUT`` runs a pickled ``ShardJob`` in a
process of its own (started by ``bench.cluster.shards``) and pickles its per-image results. Shards and the whole
set differ only in the images they are given.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.accuracy.per_image import ImageResults, run_shard
from bench.cell import BenchFailure, resolve_manifest
from bench.harness.env import cpu_info
from bench.request import BenchRequest, UsageError
from core.artifact import Artifact, ArtifactError
from core.datasets import DataError, ImageDataset
from core.files import write_atomic
from core.image_stream import default_workers
from core.listing import Sample
from core.manifest import ManifestError
from core.preprocess import Preprocess
from core.proc import exit_code_of, interrupt_on_sigterm
from core.progress import image_bar, set_quiet

PADDLE_REFERENCE = "paddle inference fp32"  # what the drift figures of a pass compare with


def check_paddle_model(artifact: Artifact) -> tuple[Path, Path]:
    """The Paddle model the export was made from, (model, params); DataError when it is not beside the export."""
    files = artifact.paddle_files
    if files is None or not all(path.is_file() for path in files):
        raise DataError(f"{artifact.model}: --drift compares with Paddle Inference on the Paddle model the export "
                        f"was made from, and none is beside {artifact.manifest_path}")
    return files


def paddle_forward(artifact: Artifact, input_shape: tuple[int, int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """Paddle Inference's FP32 logits of a batch: plain CPU kernels, as the drift pass's reference."""
    from export.source import inference_model_source

    return inference_model_source(check_paddle_model(artifact)[0], artifact.model, tuple(input_shape)).logits


def measure(request: BenchRequest, dataset: ImageDataset,
            drift: bool = False) -> tuple[Artifact, ImageResults, dict]:
    """Export (if missing), load the runtime (and Paddle's reference when ``drift``), run the pass over the
    readable images of ``dataset``: (artifact, per-image results, runtime section of the record)."""
    from runtimes import get_runtime, probe

    availability = probe(request.runtime_name, device=request.runtime.device)
    if not availability.available:
        raise BenchFailure(f"runtime {request.runtime_name!r} is not available: {availability.reason}")
    try:
        artifact = Artifact.from_manifest(resolve_manifest(request), verify=True)
    except (ManifestError, ArtifactError) as exc:
        raise BenchFailure(str(exc)) from None
    reference = paddle_forward(artifact, dataset.input_shape) if drift else None
    runtime = get_runtime(request.runtime_name)(request.runtime)
    try:
        runtime.load(artifact)
        readable = len(dataset) - len(dataset.unreadable)
        with image_bar(readable, f"{artifact.model} {request.runtime_name}") as bar:
            results = run_shard(runtime, dataset, request.batch, artifact.input_name, artifact.output_name,
                                bar.update, reference)
        described = {"name": request.runtime_name, "device": request.runtime.device,
                     "precision": request.runtime.precision, "effective": dict(runtime.effective),
                     "notes": list(runtime.notes), "versions": runtime.versions()}
    finally:
        runtime.close()
    return artifact, results, described


@dataclass
class ShardJob:
    """One shard of a pass as a node's process gets it (pickled: both ends run the same checkout)."""

    index: int
    request: BenchRequest  # its target names the node's copy of the export (``shipped_manifest``)
    kind: str  # the data set's layout, as the driver opened it
    root: str
    samples: list[Sample]  # named as on the driver; paths as this node reads them
    preprocess: Preprocess
    drift: bool
    workers: int | None = None  # image worker processes (None: one per core of the node)


def run_job(job: ShardJob) -> dict:
    """Check the shard's images (decode once), then measure them: ``{"results", "runtime", "cpu"}``. A shard
    whose images are all unreadable has no figures, only their names."""
    missing = [s for s in job.samples if not s.path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} listed image(s) not found on this node, e.g. {missing[0].path}: put the data "
                        "set at the same path on every node, or pass --ship-images")
    dataset = ImageDataset(job.kind, Path(job.root), job.samples, job.preprocess, job.workers or default_workers())
    cpu = cpu_info()
    cpu = {"model": cpu["model"], "flags": sorted(k for k, v in cpu["flags"].items() if v)}
    try:
        dataset.check()
    except DataError:
        if len(dataset.unreadable) != len(dataset):
            raise
        return {"results": ImageResults(unreadable=list(dataset.skipped)), "runtime": None, "cpu": cpu}
    set_quiet(True)  # a shard on a node: its output is the driver's, not a terminal's
    _, results, runtime = measure(job.request, dataset, drift=job.drift)
    return {"results": results, "runtime": runtime, "cpu": cpu}


def main(argv: list[str]) -> int:
    """``JOB OUT``: the outcome pickled to OUT, ``{"error": line}`` for what the shard's input or runtime caused
    (it would fail the same on any node); anything else is a traceback and exit 1."""
    job_file, out_file = argv
    interrupt_on_sigterm()  # SIGTERM (sent when the node's worker dies) unwinds: the image workers stop too
    job = pickle.loads(Path(job_file).read_bytes())
    try:
        outcome = run_job(job)
    except (DataError, BenchFailure, UsageError) as exc:
        outcome = {"error": str(exc)}
    except KeyboardInterrupt as exc:
        return exit_code_of(exc)
    write_atomic(Path(out_file), lambda f: pickle.dump(outcome, f))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
