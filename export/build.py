"""The stages of one export, run inside a temporary folder:

source (zoo layer + weights, or a brought inference model) -> Paddle inference model -> paddle2onnx at the
opset asked -> constant folding -> graph optimisation passes (each checked) -> validation -> parity against Paddle
-> reference logits -> manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.datasets import DataError, open_dataset
from core.files import sha256_of
from core.logits import Logits
from core.manifest import MANIFEST_NAME, Manifest, ModelFile, TensorSpec, package_versions, save_manifest
from core.progress import expect_stages, stage_done
from export import convert, parity
from export.convert import ExportError
from export.optimize.levels import check_level
from export.request import ExportRequest
from export.source import PaddleSource

log = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000
SEEDED_INPUTS = 4  # seeded N(0, 1) inputs checked besides the real images
REFERENCE_IMAGES = "reference.npz"
REFERENCE_SEEDED = "reference-seeded.npz"


class StageClock:
    """Seconds per stage, for the manifest; each finished stage is also reported to a parent watching the
    export's progress (``core.progress``)."""

    def __init__(self, stages: int) -> None:
        self.started = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        expect_stages(stages)

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self.last, 3)
        self.last = now
        stage_done(stage.removesuffix("_s"))

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def build(request: ExportRequest, work: Path, key: str) -> Manifest:
    """Run every stage into ``work``; raises ExportError (nothing is published) on any failure."""
    import onnx

    from export.source import inference_model_source, zoo_source
    from export.validate import validate

    clock = StageClock(stages=6)  # the clock.done() calls below
    if request.paddle_model is None:
        source = zoo_source(request.model, request.weights)
    else:
        source = inference_model_source(request.paddle_model, request.model, request.input_shape,
                                        request.preprocess)
    clock.done("build_and_weights_s")

    paddle_dir = work / "paddle"
    paddle_dir.mkdir()
    model_file, params_file = source.save(paddle_dir, request.fixed_batch)
    clock.done("paddle_inference_model_s")

    onnx_path = work / "model.onnx"
    raw_path = work / "raw.onnx"
    convert.onnx_from_paddle(model_file, params_file, request.opset, raw_path)
    raw = onnx.load(str(raw_path))
    raw_nodes = len(raw.graph.node)
    folded = convert.fold_constants(raw)
    raw_path.unlink()
    clock.done("paddle2onnx_and_fold_s")

    optimized, optimization = optimize_graph(folded, request, source.input_shape)
    onnx.save(optimized, str(onnx_path))
    clock.done("optimize_s")

    graph = validate(onnx_path, request.opset, strict=check_level(request.optimize).runtimes is None)
    clock.done("validate_s")

    try:
        references, parity_figures = check_parity(source, onnx_path, request)
    except parity.ParityError as exc:  # described for `bench explain --against paddle`, then failed
        failed = describe(request, source, onnx_path, graph, raw_nodes, (model_file, params_file), {},
                          {"passed": False, "error": str(exc)}, clock, None)
        save_manifest(work / MANIFEST_NAME, replace(failed, optimization=optimization))
        raise
    for name, logits in references.items():
        logits.save(work / name, {"producer": source.info["reference"]})
    clock.done("parity_s")

    manifest = describe(request, source, onnx_path, graph, raw_nodes, (model_file, params_file), references,
                        parity_figures, clock, key)
    manifest = replace(manifest, optimization=optimization)
    save_manifest(work / MANIFEST_NAME, manifest)
    return manifest


def optimize_graph(model, request: ExportRequest, input_shape: tuple[int, ...]) -> tuple[object, dict]:
    """Run the passes of the level asked, each checked against the stage before; the model and its description."""
    from export.optimize.driver import STEP_TOLERANCE, ULP_FACTOR, OptimizeError, optimize

    check_inputs = np.random.default_rng(1).standard_normal(
        (request.fixed_batch or SEEDED_INPUTS, *input_shape)).astype(np.float32)
    nodes_before = len(model.graph.node)
    try:
        model, reports = optimize(model, request.optimize, check_inputs)
    except OptimizeError as exc:
        raise ExportError(f"graph optimisation ({request.optimize}): {exc}") from None
    log.info("%s opset %s: optimisation %s, %d -> %d nodes", request.model, request.opset, request.optimize,
             nodes_before, len(model.graph.node))
    return model, {
        "level": request.optimize,
        "description": check_level(request.optimize).description,
        "runtimes": check_level(request.optimize).runtimes,
        "nodes_before": nodes_before,
        "nodes_after": len(model.graph.node),
        "step_check": {"tolerance": STEP_TOLERANCE, "ulp_factor": ULP_FACTOR,
                       "rule": f"max({STEP_TOLERANCE:g} x max(1, max |output|), {ULP_FACTOR:g} x the outputs' "
                               "move under a one-ulp nudge of the inputs)",
                       "inputs": f"{len(check_inputs)} x numpy default_rng(1).standard_normal",
                       "runtime": "onnxruntime CPU, ORT_DISABLE_ALL",
                       "compared_with": "the stage before each pass"},
        "passes": [report.to_dict() for report in reports],
    }


def describe(request: ExportRequest, source: PaddleSource, onnx_path: Path, graph: dict, raw_nodes: int,
             paddle_files: tuple[Path, Path], references: dict[str, Logits], parity_figures: dict,
             clock: StageClock, key: str | None) -> Manifest:
    """The manifest of a finished build."""
    model_file, params_file = paddle_files
    return Manifest(
        model=source.name,
        opset_requested=request.opset,
        opset_written=graph["opset_written"],
        graph=ModelFile(
            file=onnx_path.name, sha256=sha256_of(onnx_path), format="onnx", bytes=onnx_path.stat().st_size,
            ir_version=graph["ir_version"], node_count=graph["node_count"],
            node_count_before_folding=raw_nodes, op_census=graph["op_census"],
            inputs=[TensorSpec(**t) for t in graph["inputs"]],
            outputs=[TensorSpec(**t) for t in graph["outputs"]],
        ),
        batch=request.batch,
        family=source.family,
        input_shape=list(source.input_shape),
        num_classes=(int(references[REFERENCE_SEEDED].values.shape[1]) if REFERENCE_SEEDED in references
                     else (graph["outputs"][0]["shape"] or [None])[-1]),
        weights=source.weights,
        paddle_model={"model_file": f"paddle/{model_file.name}", "params_file": f"paddle/{params_file.name}"},
        preprocess=source.preprocess,
        reference=None if not references else {
            "producer": source.info["reference"],
            "seeded": {"file": REFERENCE_SEEDED, "count": SEEDED_INPUTS,
                       "rng": "numpy default_rng(0).standard_normal"},
            "images": ({"file": REFERENCE_IMAGES, "folder": str(request.images),
                        "count": len(references[REFERENCE_IMAGES].names)}
                       if REFERENCE_IMAGES in references else None),
        },
        parity=parity_figures,
        versions=package_versions(),
        export_seconds=clock.total,
        stage_seconds=clock.seconds,
        cache_key=key,
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def seeded_inputs(input_shape: tuple[int, ...], count: int = SEEDED_INPUTS) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, *input_shape)).astype(np.float32)


def check_parity(source: PaddleSource, onnx_path: Path,
                 request: ExportRequest) -> tuple[dict[str, Logits], dict]:
    """Paddle's logits (the references) and the parity figures of the ONNX model against them."""
    seeded = seeded_inputs(source.input_shape)
    reference = source.logits(seeded)
    figures = {"seeded": parity.check("seeded inputs", reference,
                                      parity.ort_logits(onnx_path, seeded, request.fixed_batch))}
    names = [f"seeded_{i:03d}" for i in range(len(seeded))]
    references = {REFERENCE_SEEDED: Logits(reference, names)}
    if source.preprocess is not None and request.images:
        images, names, labels = load_eval_images(Path(request.images), source.preprocess)
        reference = source.logits(images)
        figures["images"] = parity.check(f"{len(images)} images", reference,
                                         parity.ort_logits(onnx_path, images, request.fixed_batch))
        # The images' labels are ImageNet-1k classes: a brought model with other classes keeps none.
        imagenet = reference.shape[1] == IMAGENET_CLASSES
        references[REFERENCE_IMAGES] = Logits(reference, names, np.asarray(labels, np.int64) if imagenet else None)
    return references, figures


def load_eval_images(folder: Path, preprocess) -> tuple[np.ndarray, list[str], list[int]]:
    """The evaluation images (PaddleClas list format ``val_list.txt``), preprocessed.

    Read with the same loader as the drift pass, so both see the same names and tensors. Parity needs every
    listed image: one that cannot be decoded fails the export.
    """
    list_file = folder / "val_list.txt"
    try:
        dataset = open_dataset(folder, preprocess=preprocess, labels=list_file, layout="list")
        images, labels, names = next(iter(dataset.batches(len(dataset))))
    except DataError as exc:
        raise ExportError(f"evaluation images: {exc}") from None
    if dataset.skipped:
        first = dataset.skipped[0]
        raise ExportError(f"evaluation images: cannot decode {first['path']}: {first['reason']}")
    return images, list(names), [int(label) for label in labels]
