"""How much memory a batch will take, estimated before anything is allocated.

``--batch 100000`` used to die on a 146 GiB MemoryError, and ``--batch 1000`` took 12 GB without a word.
Before the runtime loads, the cell adds up:

- the input batch (the harness's feed, and the runtime's own copy of it),
- the output batch (likewise twice),
- the model: its file size, twice (the file as read, and the runtime's compiled or repacked weights),
- the activations: the peak of the intermediate tensors alive at once for one image, from the ONNX graph
  (shapes inferred at batch 1, tensors freed after their last consumer), times the batch, times
  ``ACTIVATION_OVERHEAD`` for what runtimes add (arena rounding, layout copies, parallel requests).
  Without ``onnx`` or for a non-ONNX model it is ``ACTIVATIONS_PER_INPUT`` times the input of one image.

and compares the sum with the memory available now (``MemAvailable``): more than that is refused with the
estimate's parts, more than ``WARN_FRACTION`` of it is a warning. It is an estimate, meant to catch batches
that cannot fit, not to predict the peak to the megabyte.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.artifact import Artifact

log = logging.getLogger(__name__)

# Runtime overhead on the graph's activation peak, measured on MobileViT_XXS at batch 32: OpenVINO ~1.0x,
# ONNX Runtime ~2.5x (arena rounding, layout copies). Refused below the low bound, warned above the high one.
ACTIVATION_OVERHEAD = (1.0, 3.0)
ACTIVATIONS_PER_INPUT = (2.0, 32.0)  # without a graph to read, times one image's input (MobileViT: ~11x)
WARN_FRACTION = 0.5
GRAPH_CHECK_FRACTION = 0.05  # below this share of the memory (on the generous bound) the graph is not read


class BatchTooLarge(ValueError):
    """The batch cannot fit in the memory available now."""


@dataclass(frozen=True)
class Footprint:
    batch: int
    input_bytes: int  # per image
    output_bytes: int  # per image
    model_bytes: int
    activation_bytes: tuple[float, float]  # per image, low and high
    activation_source: str  # "onnx graph" | "input size"

    def total(self, bound: int = 1, batch: int | None = None) -> int:
        """Bytes at ``batch`` (default: the footprint's own); ``bound`` 0 low, 1 high."""
        batch = self.batch if batch is None else batch
        per_image = 2 * self.input_bytes + 2 * self.output_bytes + self.activation_bytes[bound]
        return int(2 * self.model_bytes + batch * per_image)

    def largest_batch(self, available: int) -> int:
        """The largest batch whose low estimate fits in ``available``."""
        per_image = self.total(0, 1) - self.total(0, 0)
        return max(0, int((available - self.total(0, 0)) // max(per_image, 1)))

    def describe(self) -> str:
        b = self.batch
        return (f"{gib(self.total(0))} to {gib(self.total(1))} (input {gib(b * self.input_bytes)} and output "
                f"{gib(b * self.output_bytes)}, each held twice; model {gib(self.model_bytes)} twice; "
                f"activations {gib(b * self.activation_bytes[0])} to {gib(b * self.activation_bytes[1])}, "
                f"from the {self.activation_source})")

    def to_dict(self) -> dict:
        return {"low_bytes": self.total(0), "high_bytes": self.total(1), "source": self.activation_source}


def gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _per_image_output(artifact: Artifact) -> int:
    shape = artifact.output.shape[1:]
    count = math.prod(d for d in shape if isinstance(d, int) and d > 0) if shape else 0
    if not count:
        count = artifact.manifest.num_classes or 1000
    return count * np.dtype(artifact.output.dtype).itemsize


def estimate(artifact: Artifact, batch: int, available: int | None = None) -> Footprint:
    """The footprint of running ``artifact`` at ``batch``; reads the graph only when the batch is big enough
    (relative to ``available``) for the estimate to matter."""
    per_input = math.prod(artifact.batch_shape(1)) * artifact.input_dtype.itemsize
    model_bytes = artifact.manifest.graph.bytes or _size(artifact.model_path)
    rough = Footprint(batch, per_input, _per_image_output(artifact), model_bytes,
                      tuple(per_input * f for f in ACTIVATIONS_PER_INPUT), "input size")
    if available is not None and rough.total(1) < GRAPH_CHECK_FRACTION * available:
        return rough
    per_image = activation_peak_per_image(artifact)
    if per_image is None:
        return rough
    return Footprint(batch, per_input, rough.output_bytes, model_bytes,
                     tuple(per_image * f for f in ACTIVATION_OVERHEAD), "onnx graph")


def check_fits(artifact: Artifact, batch: int, available: int | None) -> Footprint | None:
    """Refuse (``BatchTooLarge``) a batch that cannot fit in ``available`` bytes; warn when it is large."""
    if available is None:  # not Linux: nothing to compare with
        return None
    footprint = estimate(artifact, batch, available)
    if footprint.total(0) > available:
        largest = footprint.largest_batch(available)
        hint = f"pass --batch {largest} or less" if largest >= 1 else "this model does not fit at any batch"
        raise BatchTooLarge(f"batch {batch} of {artifact.model} needs {footprint.describe()}, more than the "
                            f"{gib(available)} of memory available; {hint}")
    if footprint.total(1) > WARN_FRACTION * available:
        log.warning("batch %d of %s may need up to %s of the %s of memory available (%s)", batch,
                    artifact.model, gib(footprint.total(1)), gib(available), footprint.describe())
    return footprint


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def activation_peak_per_image(artifact: Artifact) -> int | None:
    """Bytes of intermediate tensors alive at once for one image (None without onnx or shapes)."""
    if artifact.format != "onnx":
        return None
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    try:
        model = onnx.load(str(artifact.onnx_path), load_external_data=False)
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[0].Clear()
                dims[0].dim_value = 1
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # an estimate must never fail the run
        log.info("%s: no activation estimate from the graph (%s)", artifact.model, exc)
        return None
    return liveness_peak(inferred.graph)


def liveness_peak(graph) -> int | None:
    """Peak sum of live intermediate tensor sizes over the (topologically ordered) nodes."""
    sizes = {}
    for value in [*graph.value_info, *graph.output]:
        size = _tensor_bytes(value)
        if size is not None:
            sizes[value.name] = size
    if not sizes:
        return None
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = index
    final = len(graph.node)
    for value in graph.output:
        last_use[value.name] = final
    live, peak, ends = 0, 0, {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name in sizes:
                live += sizes[name]
                ends.setdefault(last_use.get(name, index), []).append(sizes[name])
        peak = max(peak, live)
        live -= sum(ends.pop(index, []))
    return peak


def _tensor_bytes(value) -> int | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if any(d is None for d in dims):
        return None
    try:
        from onnx import helper

        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 4
    return math.prod(dims) * itemsize
