"""An exported model as a runtime sees it: the file to load, its input and output, and where it came from.

Built from a :class:`~core.manifest.Manifest` on disk (:meth:`Artifact.from_manifest`) or, in tests, from a
model file alone (:meth:`Artifact.from_model_file`), so the harness can be exercised without an export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.files import sha256_of
from core.manifest import Manifest, ModelFile, TensorSpec, load_manifest, manifest_path_of
from core.preprocess import Preprocess


class ArtifactError(ValueError):
    """The artifact is unusable as given (file missing, changed since export, unsupported shape)."""


@dataclass(frozen=True)
class Artifact:
    manifest: Manifest
    root: Path  # the folder the manifest's relative paths start from
    manifest_path: Path | None = None

    @classmethod
    def from_manifest(cls, path: Path, verify: bool = False) -> Artifact:
        """The artifact a manifest describes; with ``verify``, check the model file is there and unchanged."""
        path = manifest_path_of(Path(path))
        artifact = cls(load_manifest(path), path.parent.resolve(), path.resolve())
        if verify:
            artifact.verify()
        return artifact

    @classmethod
    def from_model_file(cls, path: Path, input_shape: list, output_shape: list, model: str = "model",
                        input_name: str = "x", output_name: str = "y", opset: int = 17) -> Artifact:
        """An artifact with a minimal manifest, for a model file made outside the export stage."""
        path = Path(path).resolve()
        fmt = "openvino-ir" if path.suffix == ".xml" else "onnx"
        graph = ModelFile(file=path.name, sha256=sha256_of(path), format=fmt,
                          inputs=[TensorSpec(input_name, list(input_shape))],
                          outputs=[TensorSpec(output_name, list(output_shape))])
        manifest = Manifest(model=model, opset_requested=opset, opset_written=opset, graph=graph,
                            input_shape=[d for d in input_shape[1:] if isinstance(d, int)])
        return cls(manifest, path.parent)

    def verify(self) -> None:
        """The model file exists and matches the manifest's sha256 (it did not change since export)."""
        path = self.model_path
        if not path.is_file():
            raise ArtifactError(f"{path} not found (named by {self.manifest_path or 'the manifest'})")
        actual = sha256_of(path)
        if actual != self.manifest.graph.sha256:
            raise ArtifactError(f"{path} does not match its manifest (sha256 {actual[:12]}..., manifest says "
                                f"{self.manifest.graph.sha256[:12]}...); the file changed since export: "
                                f"re-export it")

    # --- what runtimes need --------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.manifest.model

    @property
    def format(self) -> str:
        return self.manifest.graph.format

    @property
    def model_path(self) -> Path:
        return (self.root / self.manifest.graph.file).resolve()

    @property
    def onnx_path(self) -> Path:
        """The ONNX file; an OpenVINO IR artifact has none (runtimes that need ONNX check ``format``)."""
        if self.format != "onnx":
            raise ArtifactError(f"{self.model}: this artifact is an OpenVINO IR, not an ONNX model")
        return self.model_path

    @property
    def sha256(self) -> str:
        return self.manifest.graph.sha256

    @property
    def opset(self) -> int:
        return self.manifest.opset_written

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def input(self) -> TensorSpec:
        return self.manifest.graph.inputs[0]

    @property
    def output(self) -> TensorSpec:
        return self.manifest.graph.outputs[0]

    @property
    def input_name(self) -> str:
        return self.input.name

    @property
    def output_name(self) -> str:
        return self.output.name

    @property
    def input_shape(self) -> list:
        return list(self.input.shape)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input.dtype)

    @property
    def preprocess(self) -> Preprocess | None:
        return self.manifest.preprocess

    @property
    def paddle_files(self) -> tuple[Path, Path] | None:
        """(model, params) of the Paddle inference model the export started from, if it is beside it."""
        paddle = self.manifest.paddle_model
        if not paddle:
            return None
        return (self.root / paddle["model_file"]).resolve(), (self.root / paddle["params_file"]).resolve()

    def reference_file(self, kind: str = "images") -> Path | None:
        """The stored Paddle logits of the export's evaluation ``images`` or ``seeded`` inputs."""
        entry = (self.manifest.reference or {}).get(kind) or {}
        return (self.root / entry["file"]).resolve() if entry.get("file") else None

    def batch_shape(self, batch: int) -> tuple[int, ...]:
        """The input shape at ``batch``; a fixed-batch model must be asked for its own batch."""
        return static_shape(self.input_shape, batch, self.model)


def static_shape(shape: list, batch: int, what: str = "the model") -> tuple[int, ...]:
    """Replace a symbolic leading (batch) dimension with ``batch``; every other dimension must be fixed."""
    if not shape:
        raise ArtifactError(f"{what}: the input has no shape")
    lead = shape[0]
    if isinstance(lead, int) and lead > 0 and lead != batch:
        raise ArtifactError(f"{what} was exported with fixed batch {lead}; cannot run batch {batch} "
                            f"(export it with batch 'dynamic' or {batch})")
    rest = list(shape[1:])
    if any(not (isinstance(d, int) and d > 0) for d in rest):
        raise ArtifactError(f"{what}: only the batch dimension may be dynamic, got shape {shape}")
    return (batch, *rest)
