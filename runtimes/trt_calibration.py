"""TensorRT int8 calibration of an fp32 model: the data, checked against the model input, and the calibrator.

Comparable int8 paths: by default TensorRT calibrates on the export's evaluation images (the 44 images the
drift pass measures and the int8 QDQ export is calibrated on), preprocessed as the manifest says, in chunks of
a fixed calibration batch (the model's fixed batch, else 1) whatever the timing batch, so the batch-1 and
batch-8 engines of one model get the same scales. An int8 QDQ model needs none of this: it carries its scales.

TensorRT's calibrator API (``IInt8EntropyCalibrator2``) is deprecated since 10.1 and gone in 11; this
adapter supports 10.x only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from core.artifact import Artifact
from core.datasets import CALIBRATION_IMAGES, DataError, open_dataset
from core.files import sha256_of, write_bytes_atomic
from runtimes.cuda import cuda_call

log = logging.getLogger("runtimes.trt")

EXPORT_IMAGES = "export"  # calibration_data value: the export's evaluation images (asked explicitly only)
BUNDLED = "bundled"  # the default: the bundled calibration images, as the ov/ort int8 exports use
MIN_IMAGES = 32


class CalibrationDataError(ValueError):
    """Calibration data that cannot calibrate this model's input."""


def calibration_batch(input_shape: list) -> int:
    """The batch the calibrator feeds: the model's fixed batch, else 1 (independent of the timing batch)."""
    lead = input_shape[0]
    return lead if isinstance(lead, int) and lead > 0 else 1


def validate_calibration_data(data: np.ndarray, input_shape: list, batch: int) -> np.ndarray:
    """``data`` as contiguous float32 (N, C, H, W) matching the model input, or a clear error.

    Checks what TensorRT would otherwise read out of bounds or fail on without a message: rank, C/H/W against
    the model input, at least one full batch, finite values. A remainder that fills no batch is dropped and
    logged, as are fewer images than entropy calibration wants."""
    if not isinstance(data, np.ndarray):
        raise CalibrationDataError(f"calibration data must be a numpy array, got {type(data).__name__}")
    chw = tuple(input_shape[1:])
    expected = f"(N, {', '.join(map(str, chw))})"
    if data.ndim != 1 + len(chw):
        raise CalibrationDataError(f"calibration data has shape {data.shape}; expected {expected}")
    if any(d != got for d, got in zip(chw, data.shape[1:], strict=True)):
        raise CalibrationDataError(f"calibration data is (N, {', '.join(map(str, data.shape[1:]))}) but the "
                                   f"model input is {expected}")
    if data.dtype.kind not in "fiu":
        raise CalibrationDataError(f"calibration data has dtype {data.dtype}; expected float32 images")
    if batch < 1 or len(data) < batch:
        raise CalibrationDataError(f"calibration data has {len(data)} image(s); one calibration batch needs "
                                   f"{batch}")
    array = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(array).all():
        raise CalibrationDataError("calibration data contains NaN or inf")
    dropped = len(array) % batch
    if dropped:
        log.warning("trt: the last %d calibration image(s) fill no batch of %d and are not used", dropped, batch)
    if len(array) < MIN_IMAGES:
        log.warning("trt: %d calibration images is few for entropy calibration", len(array))
    return array[: len(array) - dropped]


def load_calibration_data(source: str, artifact: Artifact) -> tuple[np.ndarray, dict]:
    """(validated images, description) from ``source``: ``"export"``, an image folder, or a ``.npy``."""
    batch = calibration_batch(artifact.input_shape)
    try:
        if source.endswith(".npy"):
            data = np.load(source, allow_pickle=False)
            described = {"source": source, "sha256": sha256_of(Path(source))}
        else:
            folder = _image_folder(source, artifact)
            if artifact.preprocess is None:
                raise CalibrationDataError(f"{artifact.model}: the manifest has no preprocessing settings for "
                                           f"images; pass calibration_data=FILE.npy of preprocessed inputs")
            dataset = open_dataset(folder, preprocess=artifact.preprocess)
            data = np.concatenate([images for images, _, _ in dataset.batches(64)])
            described = {"source": {EXPORT_IMAGES: "export images", BUNDLED: "bundled calibration images"}.get(
                source, "image folder"), "folder": str(folder), "sha256": dataset.fingerprint}
            if source == EXPORT_IMAGES:  # asked for: agreement measured on the same images is optimistic
                described["calibrated_on_evaluation_images"] = True
    except (OSError, ValueError, DataError) as exc:
        if isinstance(exc, CalibrationDataError):
            raise
        raise CalibrationDataError(f"calibration data {source}: {exc}") from exc
    data = validate_calibration_data(data, artifact.input_shape, batch)
    return data, {**described, "images": len(data), "batch": batch, "algorithm": "entropy2"}


def _image_folder(source: str, artifact: Artifact) -> Path:
    if source == BUNDLED:
        return CALIBRATION_IMAGES
    if source != EXPORT_IMAGES:
        return Path(source)
    folder = ((artifact.manifest.reference or {}).get("images") or {}).get("folder")
    if not folder or not Path(folder).is_dir():
        raise CalibrationDataError(f"{artifact.model}: the export's evaluation images ({folder or 'none'}) are "
                                   f"not here; pass calibration_data=DIR (images) or FILE.npy")
    return Path(folder)


def calibration_cache_key(onnx_sha256: str, data: dict, trt_version: str) -> str:
    """The calibration cache is shared by the engines of every timing batch of one model and data set."""
    fields = {"onnx": onnx_sha256, "data": data.get("sha256"), "tensorrt": trt_version, "batch": data["batch"],
              "algorithm": data["algorithm"]}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def make_calibrator(trt, cudart, data: np.ndarray, batch: int, cache_file: Path):
    """An entropy calibrator over validated float32 ``data`` in chunks of ``batch``, from one device buffer.

    An exception escaping ``get_batch`` into TensorRT's C++ would end calibration without a message: it is
    kept in ``error`` and the build raises it."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 trampoline: the base __init__ must run
            self.index = self.batches = 0
            self.error: BaseException | None = None
            self.pointer = cuda_call(cudart.cudaMalloc(data[:batch].nbytes))

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            try:
                if self.index + batch > len(data):
                    return None
                chunk = data[self.index: self.index + batch]
                kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                cuda_call(cudart.cudaMemcpy(self.pointer, chunk.ctypes.data, chunk.nbytes, kind))
                self.index += batch
                self.batches += 1
                return [int(self.pointer)]
            except BaseException as exc:  # re-raised by the build, see the docstring
                self.error = exc
                return None

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            write_bytes_atomic(cache_file, bytes(cache))

        def free(self):
            pointer, self.pointer = self.pointer, None
            if pointer is not None:
                cuda_call(cudart.cudaFree(pointer))

    return Calibrator()
