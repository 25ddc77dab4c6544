"""The manifest written beside every exported model: the contract between the export stage and the rest.

``Manifest`` is the one place its fields are named. It is written and read only through :func:`save_manifest`
and :func:`load_manifest`, which check the schema version, so a stage never reads a manifest of another
shape by accident. Free-form descriptions (parity figures, optimisation passes, quantization parameters)
stay plain dicts: they are recorded, not interpreted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from core.files import write_json_atomic
from core.preprocess import Preprocess

SCHEMA_VERSION = 2
MANIFEST_NAME = "model.onnx.json"
FORMATS = ("onnx", "openvino-ir")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
EXPORT_PACKAGES = ("paddlepaddle", "paddle2onnx", "onnx", "onnxruntime", "polygraphy", "onnxslim", "nncf",
                   "openvino", "onnxconverter-common", "numpy")


class ManifestError(ValueError):
    """A manifest that cannot be read or does not have the expected shape; the message names the file."""


def package_versions(names: tuple[str, ...] = EXPORT_PACKAGES) -> dict[str, str | None]:
    """Installed versions from package metadata, without importing (and initialising) any package."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list  # ints, or a string for a symbolic dimension ("batch")
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelFile:
    """The model a runtime loads: an ONNX file, or an OpenVINO IR (``.xml`` with its ``.bin`` beside it)."""

    file: str
    sha256: str
    format: str = "onnx"
    bytes: int = 0
    ir_version: int | None = None
    node_count: int | None = None
    node_count_before_folding: int | None = None
    op_census: dict[str, int] = field(default_factory=dict)
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)


@dataclass(frozen=True)
class Manifest:
    """What one export produced and how; see the README's export section for the folder layout."""

    model: str
    opset_requested: int | None
    opset_written: int
    graph: ModelFile
    batch: str | int = "dynamic"
    family: str | None = None
    input_shape: list[int] = field(default_factory=list)  # C, H, W
    num_classes: int | None = None
    precision: str = "fp32"  # the numeric format of the model file itself (int8: quantized, fp16: halved)
    weights: dict[str, Any] = field(default_factory=dict)
    paddle_model: dict[str, str] | None = None  # {"model_file", "params_file"}, relative to the manifest
    preprocess: Preprocess | None = None
    reference: dict[str, Any] | None = None  # {"images": {"file", ...}, "seeded": {"file", ...}}
    parity: dict[str, Any] = field(default_factory=dict)
    optimization: dict[str, Any] | None = None  # graph passes, each with its node census before/after
    reduced_precision: dict[str, Any] | None = None  # method, parameters, calibration set, census
    source: dict[str, Any] | None = None  # the fp32 export a derived model (int8, fp16) was built from
    versions: dict[str, str | None] = field(default_factory=dict)
    export_seconds: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cache_key: str | None = None
    created_utc: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.graph.format not in FORMATS:
            raise ManifestError(f"unknown model format {self.graph.format!r}; known: {', '.join(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ManifestError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")
        if not self.graph.inputs or not self.graph.outputs:
            raise ManifestError(f"{self.model}: the manifest names no model inputs or outputs")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict() if self.preprocess else None
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{where}: manifest schema {version!r} is not {SCHEMA_VERSION}; re-export it")
        _check_json_types(cls, data, where)
        _check_json_types(ModelFile, data.get("graph"), f"{where}: graph")
        try:
            graph = dict(data["graph"])
            graph["inputs"] = [TensorSpec(**t) for t in graph.get("inputs", [])]
            graph["outputs"] = [TensorSpec(**t) for t in graph.get("outputs", [])]
            values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            values["graph"] = ModelFile(**graph)
            if values.get("preprocess"):
                values["preprocess"] = Preprocess.from_dict(values["preprocess"])
            return cls(**values)
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: not a valid manifest ({type(exc).__name__}: {exc})") from None


def _check_json_types(cls, data: Any, where: str) -> None:
    """Fields declared as objects or lists must be JSON objects or lists (else readers fail far away)."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for f in fields(cls):
        value, declared = data.get(f.name), str(f.type)
        for prefix, kind, name in (("dict", dict, "object"), ("list", list, "list"), ("Preprocess", dict, "object"),
                                   ("ModelFile", dict, "object")):
            if declared.startswith(prefix) and value is not None and not isinstance(value, kind):
                raise ManifestError(f"{where}: {f.name} must be a JSON {name}, got {type(value).__name__}")


def manifest_path_of(path: Path) -> Path:
    """A manifest path, or the manifest inside an export folder."""
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def load_manifest(path: Path) -> Manifest:
    """Read and check a manifest (or the one in an export folder); ``ManifestError`` names the file."""
    path = manifest_path_of(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from None
    return Manifest.from_dict(data, where=str(path))


def save_manifest(path: Path, manifest: Manifest) -> None:
    write_json_atomic(path, manifest.to_dict())
