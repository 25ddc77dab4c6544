"""``python -m bench accuracy``: top-1 and top-5 of one runtime on a labelled image set, with their 95 % intervals,
beside the top-1 PaddleClas publishes for the model (and the difference).

    python -m bench accuracy --model LeViT_128S --runtime ov --weights official --data ILSVRC2012/val [--labels FILE]

Data: an ImageNet-layout folder (``val_list.txt`` of ``path label`` lines, found in the folder or given by
``--labels``; or ``<wnid>/*.JPEG`` class folders, labelled in the ImageNet-1k synset order). Order of work:
usage checks, the data set opened and every image decoded once (a list naming a missing file, a label out of
range or a set with no readable image: exit 2, nothing written), then the export (made if missing) and the
runtime, then one streamed pass: images preprocessed in worker processes ahead of the runtime (PaddleClas's
eval pipeline unless ``--preprocess infer`` or a config), a progress bar, per-image results merged into the
statistics once.
One JSON line per run goes to ``--results`` (default ``results/accuracy.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from bench.accuracy.drift_pass import pipeline_preprocess
from bench.accuracy.per_image import ImageResults, run_shard
from bench.accuracy.statistics import accuracy_statistics
from bench.cell import BenchFailure, resolve_manifest
from bench.cli_common import add_target_arguments, fail, setup_logging
from bench.harness import env
from bench.records import new_run_id
from bench.request import BenchRequest, Target, UsageError, validate
from core.artifact import Artifact, ArtifactError
from core.datasets import DataError, ImageDataset, open_dataset
from core.files import append_line, check_appendable
from core.image_stream import default_workers
from core.manifest import ManifestError, load_manifest, manifest_path_of
from core.preprocess import PIPELINES, Preprocess, for_model, from_config
from core.progress import image_bar
from core.yamlio import ConfigError
from export.models import MODELS, get_spec
from runtimes.base import RuntimeOptions

log = logging.getLogger(__name__)

DEFAULT_RESULTS = Path("results/accuracy.jsonl")


def add_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("accuracy")
    a.add_argument("--data", required=True, help="image folder: val_list.txt (path label) or <wnid>/ class folders")
    a.add_argument("--labels", help="PaddleClas list file (path label per line), paths relative to --data")
    a.add_argument("--precision", default="fp32", help="fp32 (default), fp16, bf16 or int8")
    a.add_argument("--batch", type=int, default=8, help="batch fed to the runtime (default 8)")
    a.add_argument("--device", help="cpu, cuda, ... (default: the runtime's first device)")
    a.add_argument("--threads", type=int, help="runtime threads (default: one per physical core)")
    a.add_argument("--preprocess", metavar="eval|infer|CONFIG.yaml",
                   help="PaddleClas preprocessing: eval (default: what its published top-1 means), infer, or a "
                        "PaddleClas training/deploy config (a brought model's)")
    a.add_argument("--workers", type=int, help="image worker processes (default: one per core)")
    a.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help=f"JSON lines file (default {DEFAULT_RESULTS})")
    a.add_argument("--json", action="store_true", help="print the record as JSON after the table")


def request_of(args: argparse.Namespace, cfg) -> BenchRequest:
    """The benchmark request whose export and runtime the pass uses (validated: UsageError when wrong)."""
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    target = Target(model=args.model, manifest=args.manifest, opset=args.opset,
                    weights=args.weights or cfg.export.weights, artifacts=args.artifacts or str(cfg.artifacts),
                    no_export=args.no_export, optimize=args.optimize or cfg.export.optimize)
    options = RuntimeOptions(device=args.device, precision=args.precision, threads=args.threads, batch=args.batch)
    request, _ = validate(BenchRequest(runtime_name=args.runtime, target=target, runtime=options))
    return request


def preprocess_of(request: BenchRequest, pipeline: str | None) -> tuple[Preprocess, int]:
    """(the images' preprocessing, the model's class count), known before any export is made."""
    target = request.target
    if target.manifest is None:
        if pipeline in (None, *PIPELINES):
            preprocess = for_model(target.model, pipeline or "eval")
        else:  # a PaddleClas config; TransformError (a usage error) when it cannot be read
            preprocess = from_config(pipeline)
        return preprocess, get_spec(target.model).num_classes
    try:
        path = manifest_path_of(Path(target.manifest))
        artifact = Artifact(load_manifest(path), path.parent.resolve(), path.resolve())
    except (ManifestError, OSError) as exc:
        raise UsageError(str(exc)) from None
    preprocess = pipeline_preprocess(artifact, pipeline)
    if preprocess is None:
        raise UsageError(f"{artifact.model}: the manifest has no image preprocessing; an accuracy pass needs one "
                         "(--preprocess CONFIG.yaml: its PaddleClas config)")
    return preprocess, artifact.manifest.num_classes or 1000


def open_checked(args: argparse.Namespace, preprocess: Preprocess, num_classes: int) -> ImageDataset:
    """The labelled data set, every image decoded once (DataError: refused before anything loads)."""
    dataset = open_dataset(args.data, preprocess=preprocess, labels=args.labels, num_classes=num_classes,
                           workers=args.workers or default_workers())
    if not isinstance(dataset, ImageDataset) or not dataset.has_labels:
        raise DataError(f"{args.data}: no labels (a val_list.txt, --labels FILE, or <wnid>/ class folders)")
    if dataset.describe().get("label_source") == "sorted_order":
        raise DataError(f"{args.data}: its class folders are neither ImageNet synsets nor class indices, so their "
                        "labels would be guesses; pass --labels FILE (path label per line)")
    with image_bar(len(dataset), "checking images") as bar:
        unreadable = dataset.check(bar.update)
    if unreadable:
        log.warning("%d of %d images cannot be read; they are left out and named in the record",
                    unreadable, len(dataset))
    return dataset


def measure(request: BenchRequest, dataset: ImageDataset) -> tuple[Artifact, ImageResults, dict]:
    """Export (if missing), load the runtime, run the pass: (artifact, per-image results, runtime section)."""
    from runtimes import get_runtime, probe

    availability = probe(request.runtime_name, device=request.runtime.device)
    if not availability.available:
        raise BenchFailure(f"runtime {request.runtime_name!r} is not available: {availability.reason}")
    try:
        artifact = Artifact.from_manifest(resolve_manifest(request), verify=True)
    except (ManifestError, ArtifactError) as exc:
        raise BenchFailure(str(exc)) from None
    runtime = get_runtime(request.runtime_name)(request.runtime)
    try:
        runtime.load(artifact)
        readable = len(dataset) - len(dataset.unreadable)
        with image_bar(readable, f"{artifact.model} {request.runtime_name}") as bar:
            results = run_shard(runtime, dataset, request.batch, artifact.input_name, artifact.output_name,
                                bar.update)
        described = {"name": request.runtime_name, "device": request.runtime.device,
                     "precision": request.runtime.precision, "effective": dict(runtime.effective),
                     "notes": list(runtime.notes), "versions": runtime.versions()}
    finally:
        runtime.close()
    return artifact, results, described


def record_of(request: BenchRequest, artifact: Artifact, dataset: ImageDataset, results: ImageResults,
              runtime: dict, seconds: float) -> dict:
    described = {k: v for k, v in dataset.describe().items() if k != "skipped"}  # the statistics name them
    published = get_spec(artifact.model).published if artifact.model in MODELS else None
    return {
        "kind": "accuracy", "schema_version": 1, "record_id": new_run_id(),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"name": artifact.model, "opset": artifact.opset, "manifest": str(artifact.manifest_path),
                  "sha256": artifact.sha256, "precision": artifact.precision, "weights": artifact.manifest.weights},
        "runtime": runtime, "batch": request.batch, "preprocess": dataset.preprocess.to_dict(), "data": described,
        "accuracy": accuracy_statistics(results, published), "seconds": round(seconds, 3),
        "environment": env.capture_environment(), "git": env.git_info(),
    }


def summary_lines(record: dict) -> list[str]:
    acc, model = record["accuracy"], record["model"]
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    lines = [f"{model['name']} on {record['runtime']['name']}/{record['runtime']['precision']}, "
             f"{record['preprocess']['pipeline'] or 'custom'} preprocessing, {acc['n']} images",
             f"  top-1 {pct(acc['top1'])} (95% CI {pct(acc['top1_ci'][0])}-{pct(acc['top1_ci'][1])})   "
             f"top-5 {pct(acc['top5'])} (95% CI {pct(acc['top5_ci'][0])}-{pct(acc['top5_ci'][1])})"]
    if acc["published_top1"] is not None:
        lines.append(f"  PaddleClas published top-1 {pct(acc['published_top1'])}: difference "
                     f"{100 * acc['top1_minus_published']:+.2f} points"
                     f"{'' if acc['published_top1_in_ci'] else ' (outside the 95% interval)'}")
    if model["weights"].get("trained") is False:  # None: a brought model's, whose training is its own
        lines.append(f"  ({model['weights'].get('kind')} weights: an untrained network; the published figure is "
                     "for --weights official)")
    elif model["weights"].get("verified") is False:
        lines.append("  (official weights with no pinned sha256: trusted on first use, see the record)")
    if acc["unreadable_images"]:
        names = ", ".join(u["name"] for u in acc["unreadable"][:3])
        lines.append(f"  {acc['unreadable_images']} unreadable image(s) left out: {names}"
                     f"{', ...' if acc['unreadable_images'] > 3 else ''}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(p)
    add_accuracy_arguments(p)
    return p


def main(argv: list[str]) -> int:
    """Parse and run (``python -m bench accuracy``)."""
    from bench.cell import EXIT_FAILED, EXIT_USAGE
    from bench.config import load_config

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return run(args, load_config(args.config))
    except (ConfigError, UsageError, DataError, ValueError) as exc:
        return fail(str(exc), EXIT_USAGE, exc, args.debug)
    except (BenchFailure, OSError, RuntimeError) as exc:
        return fail(str(exc), EXIT_FAILED, exc, args.debug)


def run(args: argparse.Namespace, cfg) -> int:
    """The whole command after parsing; UsageError/DataError: exit 2, BenchFailure/OSError: exit 1."""
    request = request_of(args, cfg)
    preprocess, num_classes = preprocess_of(request, args.preprocess)
    check_appendable(args.results)
    dataset = open_checked(args, preprocess, num_classes)
    started = time.perf_counter()
    artifact, results, runtime = measure(request, dataset)
    record = record_of(request, artifact, dataset, results, runtime, time.perf_counter() - started)
    append_line(args.results, json.dumps(record, default=str, separators=(",", ":")))
    for line in summary_lines(record):
        print(line)
    print(f"\nrecord {record['record_id']} appended to {args.results}")
    if args.json:
        print("---")
        print(json.dumps(record, indent=1, default=str))
    return 0
