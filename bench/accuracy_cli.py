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

``--drift`` also runs Paddle Inference FP32 on the same tensors (agreement, flipped images, the paired change in
top-1 with McNemar's test). ``--cluster ADDRESS [--shards N]`` splits the pass into shards run on the nodes of a Ray
cluster (``bench.cluster.shards``), merged by image name before the statistics, which are computed once.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from bench.accuracy.drift_pass import pipeline_preprocess
from bench.accuracy.per_image import ImageResults
from bench.accuracy.statistics import accuracy_statistics, drift_statistics
from bench.cell import BenchFailure
from bench.cli_common import add_target_arguments, fail, setup_logging
from bench.harness import env
from bench.labelled_pass import PADDLE_REFERENCE, measure
from bench.records import new_run_id
from bench.request import BenchRequest, Target, UsageError, validate
from core.artifact import Artifact
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
    a.add_argument("--drift", action="store_true", help="also Paddle Inference FP32 on the same tensors: agreement, "
                                                        "flipped images, change in top-1 (paired interval, McNemar)")
    c = p.add_argument_group("on a Ray cluster (README: On a cluster)")
    c.add_argument("--cluster", metavar="ADDRESS", help="run the pass in shards on the nodes of a Ray cluster: auto, "
                                                        "ray://HOST:PORT or HOST:PORT (default: here)")
    c.add_argument("--shards", type=int, help="shards of the image list (default: one per node of the target)")
    c.add_argument("--target", help="the kind of node (bench.yaml targets:) every shard runs on (default: any node)")
    c.add_argument("--ship-images", action="store_true",
                   help="send each shard's images from here (default: nodes read --data at the same path)")


def request_of(args: argparse.Namespace, cfg) -> BenchRequest:
    """The benchmark request whose export and runtime the pass uses (validated: UsageError when wrong)."""
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    check_cluster_flags(args, cfg)
    target = Target(model=args.model, manifest=args.manifest, opset=args.opset,
                    weights=args.weights or cfg.export.weights, artifacts=args.artifacts or str(cfg.artifacts),
                    no_export=args.no_export, optimize=args.optimize or cfg.export.optimize)
    options = RuntimeOptions(device=args.device, precision=args.precision, threads=args.threads, batch=args.batch)
    request, _ = validate(BenchRequest(runtime_name=args.runtime, target=target, runtime=options))
    return request


def check_cluster_flags(args: argparse.Namespace, cfg) -> None:
    if not args.cluster:
        asked = [flag for flag, value in (("--shards", args.shards), ("--target", args.target),
                                          ("--ship-images", args.ship_images)) if value]
        if asked:
            raise UsageError(f"{asked[0]} splits the pass over the nodes of a cluster: pass --cluster ADDRESS too")
    if args.shards is not None and args.shards < 1:
        raise UsageError(f"--shards must be a positive integer, got {args.shards}")
    if args.target is not None and args.target not in cfg.targets:
        raise UsageError(f"unknown target {args.target!r}; defined in bench.yaml targets: "
                         f"{', '.join(cfg.targets) or 'none'}")


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


def open_labelled(args: argparse.Namespace, preprocess: Preprocess, num_classes: int) -> ImageDataset:
    """The labelled data set, listed (a missing file or a label out of range: DataError), not decoded yet."""
    dataset = open_dataset(args.data, preprocess=preprocess, labels=args.labels, num_classes=num_classes,
                           workers=args.workers or default_workers())
    if not isinstance(dataset, ImageDataset) or not dataset.has_labels:
        raise DataError(f"{args.data}: no labels (a val_list.txt, --labels FILE, or <wnid>/ class folders)")
    if dataset.describe().get("label_source") == "sorted_order":
        raise DataError(f"{args.data}: its class folders are neither ImageNet synsets nor class indices, so their "
                        "labels would be guesses; pass --labels FILE (path label per line)")
    return dataset


def open_checked(args: argparse.Namespace, preprocess: Preprocess, num_classes: int) -> ImageDataset:
    """The labelled data set, every image decoded once (DataError: refused before anything loads)."""
    dataset = open_labelled(args, preprocess, num_classes)
    with image_bar(len(dataset), "checking images") as bar:
        unreadable = dataset.check(bar.update)
    if unreadable:
        log.warning("%d of %d images cannot be read; they are left out and named in the record",
                    unreadable, len(dataset))
    return dataset


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
        "accuracy": accuracy_statistics(results, published),
        **({"drift": drift_statistics(results, PADDLE_REFERENCE)} if results.drift is not None else {}),
        "seconds": round(seconds, 3),
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
    lines += drift_lines(record)
    if acc["unreadable_images"]:
        names = ", ".join(u["name"] for u in acc["unreadable"][:3])
        lines.append(f"  {acc['unreadable_images']} unreadable image(s) left out: {names}"
                     f"{', ...' if acc['unreadable_images'] > 3 else ''}")
    return lines


def drift_lines(record: dict) -> list[str]:
    """Against Paddle's reference (``--drift``), and where the shards ran (``--cluster``)."""
    lines = []
    if "drift" in record:
        d = record["drift"]
        lo, hi = d["top1_delta_ci"]
        lines.append(f"  against {d['reference_source']}: top-1 agreement {100 * d['agreement']:.2f}% (95% CI "
                     f"{100 * d['agreement_ci'][0]:.2f}-{100 * d['agreement_ci'][1]:.2f}%), {d['flipped']} flipped; "
                     f"top-1 change {100 * d['top1_delta']:+.2f} points (95% CI {100 * lo:+.2f} to {100 * hi:+.2f}), "
                     f"McNemar p {d['mcnemar_p']:.3g}")
    if "cluster" in record:
        c = record["cluster"]
        nodes = {s["node_id"] for s in c["per_shard"]}
        lines.append(f"  {c['shards']} shard(s) on {len(nodes)} node(s) of the cluster at {c['address']} "
                     f"(target {c['target']}; images {c['images']}), merged by image name")
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
    if args.cluster:
        record = run_on_cluster(args, cfg, request, preprocess, num_classes)
    else:
        dataset = open_checked(args, preprocess, num_classes)
        started = time.perf_counter()
        artifact, results, runtime = measure(request, dataset, args.drift)
        record = record_of(request, artifact, dataset, results, runtime, time.perf_counter() - started)
    append_line(args.results, json.dumps(record, default=str, separators=(",", ":")))
    for line in summary_lines(record):
        print(line)
    print(f"\nrecord {record['record_id']} appended to {args.results}")
    if args.json:
        print("---")
        print(json.dumps(record, indent=1, default=str))
    return 0


def run_on_cluster(args: argparse.Namespace, cfg, request: BenchRequest, preprocess: Preprocess,
                   num_classes: int) -> dict:
    """The pass in shards on the cluster at ``--cluster`` (no cluster there: ClusterUnavailable, exit 2); the
    record a one-machine pass would write, and where the shards ran (``cluster``)."""
    from bench.cluster.connect import connect
    from bench.cluster.shards import run_sharded
    from bench.targets import ANY_NODE

    dataset = open_labelled(args, preprocess, num_classes)  # each node decodes and checks its own shard
    target = cfg.targets[args.target] if args.target else ANY_NODE
    cluster = connect(args.cluster, [target])
    try:
        started = time.perf_counter()
        artifact, results, runtime, where = run_sharded(cluster, target, request, dataset, args.shards,
                                                        args.ship_images, args.drift, args.workers)
    finally:
        cluster.close()
    if results.unreadable:
        log.warning("%d of %d images cannot be read; they are left out and named in the record",
                    len(results.unreadable), len(dataset))
    record = record_of(request, artifact, dataset, results, runtime, time.perf_counter() - started)
    return {**record, "cluster": where}
