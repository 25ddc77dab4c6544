"""Throughput and memory of the accuracy pass (``python -m bench accuracy``): does preprocessing keep the runtime fed,
and does memory stay flat in the number of images?

Per model, on ``--images`` images (the bundled evaluation and calibration images, repeated under new names):
- preprocessing alone: images/s of decoding + PaddleClas eval preprocessing in the worker processes, once they
  run (their start, paid once per pass, is printed beside it);
- the model alone: images/s of the runtime at ``--batch`` on tensors already made (the pass's ceiling);
- the whole pass: images/s of ``bench.accuracy.per_image.run_shard`` (stream, preprocess, run, keep top-5);
- the peak resident memory of a whole pass on a quarter of the images and on all of them, each in a fresh
  process (flat: the same within noise).
Preprocessing alone should reach at least 2x the model's images/s, or the pass waits on it.

    python benchmarks/accuracy_pass.py [--models LeViT_128S MobileViT_S] [--images 2000] [--runtime ov] [--batch 8]
    python benchmarks/accuracy_pass.py --models LeViT_128S --images 40      # a quick check that it runs

Run it alone on the machine: the figures are only as good as its quiet (README: "Quiet measurements").
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run from a checkout: make the repo importable even when the editable install is stale.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy.per_image import run_shard  # noqa: E402
from bench.cell import resolve_manifest  # noqa: E402
from bench.harness.env import cores_line, cpu_info  # noqa: E402
from bench.request import BenchRequest, Target, validate  # noqa: E402
from core.artifact import Artifact  # noqa: E402
from core.datasets import open_dataset  # noqa: E402
from core.image_stream import default_workers, preprocessed  # noqa: E402
from core.preprocess import for_model  # noqa: E402
from runtimes.base import RuntimeOptions  # noqa: E402

BUNDLED = [ROOT / "data" / "imagenet-val-44" / "images", ROOT / "data" / "imagenet-calib-125" / "images"]


def image_set(count: int, folder: Path, classes: int = 1000) -> Path:
    """``count`` labelled images in list format (labels below ``classes``): links to the bundled ones, repeated
    under new names."""
    sources = sorted(p for d in BUNDLED for p in d.iterdir() if p.suffix == ".JPEG")
    (folder / "images").mkdir(parents=True)
    lines = []
    for i, source in zip(range(count), itertools.cycle(sources), strict=False):
        link = folder / "images" / f"{i:06d}_{source.name}"
        link.symlink_to(source)
        lines.append(f"images/{link.name} {i % classes}")
    (folder / "val_list.txt").write_text("\n".join(lines) + "\n")
    return folder


def loaded_runtime(model: str, runtime: str, batch: int, threads: int | None):
    request, cls = validate(BenchRequest(runtime_name=runtime, target=Target(model=model),
                                         runtime=RuntimeOptions(batch=batch, threads=threads)))
    artifact = Artifact.from_manifest(resolve_manifest(request), verify=True)
    instance = cls(request.runtime)
    instance.load(artifact)
    return instance, artifact


def preprocessing_rate(model: str, data: Path, workers: int) -> tuple[float, float]:
    """(images/s once the workers run, seconds until the first image came back): the workers' start (spawned
    processes importing numpy and OpenCV) is paid once per pass, so the rate that feeds the runtime is the one
    after it; both are printed."""
    paths = [str(p) for p in sorted((data / "images").iterdir())]
    start = time.perf_counter()
    outcomes = preprocessed(for_model(model), paths, workers, window=64)
    next(outcomes)  # the first image: its time is the workers' start
    running = time.perf_counter()
    count = sum(1 for outcome in outcomes if outcome.array is not None)
    return count / (time.perf_counter() - running), running - start


def model_rate(runtime, artifact: Artifact, batch: int, seconds: float = 5.0) -> float:
    shape = [batch, *artifact.manifest.input_shape]
    runtime.prepare({artifact.input_name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)})
    runtime.run()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        runtime.run()
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def pass_rate(runtime, artifact: Artifact, model: str, data: Path, batch: int, workers: int) -> float:
    dataset = open_dataset(data, preprocess=for_model(model), workers=workers)
    start = time.perf_counter()
    results = run_shard(runtime, dataset, batch, artifact.input_name, artifact.output_name)
    return len(results) / (time.perf_counter() - start)


def _peak_of_pass(model: str, runtime: str, data: str, batch: int, workers: int, threads: int | None, queue) -> None:
    instance, artifact = loaded_runtime(model, runtime, batch, threads)
    pass_rate(instance, artifact, model, Path(data), batch, workers)
    instance.close()
    status = Path("/proc/self/status").read_text()
    queue.put(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024)


def peak_mib(model: str, runtime: str, data: Path, batch: int, workers: int, threads: int | None) -> float:
    """Peak resident memory (MiB) of a fresh process that runs one whole pass over ``data``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_of_pass, args=(model, runtime, str(data), batch, workers, threads, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"the measuring process for {model} failed (exit {child.exitcode})")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["LeViT_128S", "MobileViT_S"])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--runtime", default="ov")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=default_workers(), help="preprocessing processes")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the runtime's)")
    args = parser.parse_args()
    cpu = cpu_info()
    flags = " ".join(sorted(f for f, present in (cpu.get("flags") or {}).items() if present))
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {cores_line(cpu)}, "
          f"flags {flags}; {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"# {args.images} images, {args.runtime} fp32 batch {args.batch}, {args.workers} preprocessing workers")
    print()
    print(f"{'model':<14} {'preprocess img/s':>16} {'start s':>8} {'model img/s':>12} {'ratio':>6} "
          f"{'pass img/s':>11} {'peak MiB (N/4)':>14} {'peak MiB (N)':>12}")
    with tempfile.TemporaryDirectory(prefix="accuracy-pass-") as tmp:
        full = image_set(args.images, Path(tmp) / "full")
        quarter = image_set(max(1, args.images // 4), Path(tmp) / "quarter")
        for model in args.models:
            runtime, artifact = loaded_runtime(model, args.runtime, args.batch, args.threads)
            try:
                prep, started = preprocessing_rate(model, full, args.workers)
                alone = model_rate(runtime, artifact, args.batch)
                whole = pass_rate(runtime, artifact, model, full, args.batch, args.workers)
            finally:
                runtime.close()
            small = peak_mib(model, args.runtime, quarter, args.batch, args.workers, args.threads)
            large = peak_mib(model, args.runtime, full, args.batch, args.workers, args.threads)
            print(f"{model:<14} {prep:>16.1f} {started:>8.2f} {alone:>12.1f} {prep / alone:>6.2f} {whole:>11.1f} "
                  f"{small:>14.0f} {large:>12.0f}")
    print()
    print("preprocess img/s: once the workers run; start s: until the first image came back (the workers' start, "
          "once per pass)")
    print("ratio: preprocessing alone over the model alone (>= 2: the runtime is never starved); peak MiB: a whole")
    print("pass in a fresh process on a quarter of the images and on all of them (flat: memory does not grow)")


if __name__ == "__main__":
    main()
