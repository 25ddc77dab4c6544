"""The LeViT int8 case of issue 14: NNCF's DEFAULT preset collapses LeViT on OpenVINO CPU (0/44 top-1
agreement); ``python -m bench explain`` names the layer, and keeping it in float recovers agreement.

    python benchmarks/explain_levit_int8.py [--model LeViT_128S] [--opset 17] [--artifacts artifacts]
        [--calibration DIR] [--images 8] [--out benchmarks/explain_levit_int8]

1. The fp32 export (made by ``python -m export`` if missing).
2. Its NNCF int8 IR with the DEFAULT preset (static batch 8, calibrated on ``--calibration``, never on the
   evaluation images), written as an export-stage artifact: ``<export>-int8-ov/`` with a manifest whose
   ``precision`` is int8, ``reduced_precision`` says how it was made and ``source.manifest`` names the fp32
   export (the reduced-precision contract of core/manifest.py).
3. Top-1 agreement of the int8 IR with Paddle's fp32 logits on the export's 44 evaluation images.
4. The explain, exactly as ``python -m bench explain --runtime ov --manifest <int8 manifest>`` runs it: first
   divergence, growth ranking, known runtime bug, and the fix trials (re-quantised with the offending layers
   kept in float, measured on the 44 images against ORT fp32, judged by the int8 drift gates).
Prints the figures and writes ``layers.csv``, ``error_along_depth.png`` and ``explain.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.explain.fixes import nncf_int8
from bench.explain.graph import logit_agreement
from bench.explain.ov import deployed_logits
from bench.explain.report import section_lines
from bench.explain.run import ExplainSettings, Target, pick_images, reference_of, run_explain
from bench.harness.env import cores_line, cpu_info
from bench.launcher import ExportSpec, launch_export
from core.artifact import Artifact
from core.datasets import open_dataset
from core.files import sha256_of
from core.logits import Logits
from core.manifest import MANIFEST_NAME, TensorSpec, load_manifest, save_manifest

STATIC_BATCH = 8  # NNCF needs a static batch; the benchmark runs batch 8


def int8_export(fp32_manifest: Path, calibration: Path) -> Path:
    """The NNCF DEFAULT-preset int8 IR of the export, beside it as ``<folder>-int8-ov`` (built in a temporary
    folder, renamed into place)."""
    final = fp32_manifest.parent.with_name(fp32_manifest.parent.name + "-int8-ov")
    if (final / MANIFEST_NAME).is_file():
        return final / MANIFEST_NAME
    source = load_manifest(fp32_manifest)
    images = np.concatenate([b.images for b in open_dataset(str(calibration), preprocess=source.preprocess)
                             .batches(32)])
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    t0 = time.perf_counter()
    xml = nncf_int8(fp32_manifest.parent / source.graph.file, images, work / "model.xml", batch=STATIC_BATCH)
    seconds = time.perf_counter() - t0
    inputs = [TensorSpec(t.name, [STATIC_BATCH, *t.shape[1:]], t.dtype) for t in source.graph.inputs]
    graph = replace(source.graph, file=xml.name, format="openvino-ir", sha256=sha256_of(xml),
                    bytes=xml.stat().st_size + xml.with_suffix(".bin").stat().st_size, inputs=inputs)
    fake_quantize = xml.read_text().count('type="FakeQuantize"')
    reference = {k: v for k, v in (source.reference or {}).items()}
    if reference.get("images", {}).get("file"):  # keep the reference logits reachable from the new folder
        reference["images"] = {**reference["images"], "file": str(fp32_manifest.parent / reference["images"]["file"])}
    manifest = replace(source, graph=graph, precision="int8", batch=STATIC_BATCH, reference=reference,
                       paddle_model=None, source={"manifest": str(fp32_manifest.resolve()),
                                                  "sha256": source.graph.sha256},
                       reduced_precision={"method": "nncf.quantize (OpenVINO IR)",
                                          "parameters": {"preset": None, "model_type": None,
                                                         "static_batch": STATIC_BATCH},
                                          "calibration": {"folder": str(calibration.resolve()), "count": len(images)},
                                          "census": {"FakeQuantize": fake_quantize}, "seconds": round(seconds, 1)})
    save_manifest(work / MANIFEST_NAME, manifest)
    work.rename(final)
    return final / MANIFEST_NAME


def paddle_agreement(fp32: Artifact, int8: Path) -> dict:
    """Top-1 agreement of the int8 IR with Paddle's stored fp32 logits on all the export's images."""
    images, names = pick_images(fp32, 10_000)
    paddle, _ = Logits.load(fp32.reference_file("images"))
    order = [paddle.names.index(n) for n in names]
    return logit_agreement(paddle.values[order], deployed_logits(int8, images, "int8", STATIC_BATCH, 2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="LeViT_128S")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--calibration", type=Path, default=Path("data/imagenet-calib-125"),
                   help="calibration images (PaddleClas list or folder), disjoint from the 44 evaluation images")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("benchmarks/explain_levit_int8"))
    args = p.parse_args()
    cpu = cpu_info()
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {cores_line(cpu)}, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}; seconds below were "
          f"taken on a machine shared with other jobs: indicative only")
    fp32_manifest = launch_export(ExportSpec(args.model, args.opset, "dynamic", "seeded", args.artifacts))
    int8_manifest = int8_export(fp32_manifest, args.calibration)
    int8 = Artifact.from_manifest(int8_manifest, verify=True)
    fp32 = reference_of(int8)
    print(f"int8 model: {int8_manifest} ({int8.manifest.reduced_precision['method']}, DEFAULT preset, "
          f"{int8.manifest.reduced_precision['calibration']['count']} calibration images)")
    before = paddle_agreement(fp32, int8.model_path)
    print(f"before: top-1 agreement with Paddle fp32 {before['top1_agree']}/{before['n']}, min cosine "
          f"{before['cosine_min']:.4f}")
    print(f"explain: python -m bench explain --runtime ov --manifest {int8_manifest} --images {args.images}")
    if args.out.exists():
        shutil.rmtree(args.out / "fixes", ignore_errors=True)
    target = Target("ov", "int8", int8, fp32, batch=STATIC_BATCH, threads=2)
    outcome = run_explain(target, ExplainSettings(images=args.images, eval_images=44), args.out)
    shutil.rmtree(args.out / "fixes", ignore_errors=True)  # the re-quantised models are not kept here
    data = outcome.section
    data["files"] = {k: Path(v).name for k, v in data["files"].items()}
    (args.out / "explain.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    for line in outcome.lines + section_lines(data):
        print(line)
    seconds = data["seconds"]
    print(f"explain of {args.images} images: {seconds['total'] - _trial_seconds(data):.1f}s (search "
          f"{seconds.get('search', 0):.1f}s), fix trials {_trial_seconds(data):.1f}s")
    print(f"wrote {args.out}/layers.csv, error_along_depth.png, explain.json")
    return 0


def _trial_seconds(data: dict) -> float:
    return sum(t["seconds"] for t in (data.get("suggested_fix") or {}).get("trials") or [])


if __name__ == "__main__":
    sys.exit(main())
