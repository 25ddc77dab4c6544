"""The adapter contract every runtime implements, and the artifact it is bound to.

Lifecycle: ``__init__`` (cheap, stores options) -> ``load`` -> ``prepare`` -> ``run``* -> ``outputs``
-> ``close``. The harness in ``bench.measure`` owns warm-up and timing; an adapter's ``run`` must block until
results are ready. Public methods check the order and delegate to the underscored hooks subclasses implement.
No heavy import happens here: adapters import their runtime package inside ``_load``.
"""

from __future__ import annotations

import abc
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger(__name__)


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here: package missing, no device, provider absent."""


class LifecycleError(RuntimeError):
    """A method was called out of order (e.g. ``run`` before ``prepare``)."""


class SilentChangeError(RuntimeError):
    """The runtime would do something other than what was asked (CPU fallback, lowered precision)."""


@dataclass(frozen=True)
class Availability:
    name: str
    available: bool
    reason: str = ""  # why not, with the install hint
    detail: str = ""  # versions, devices, providers seen


@dataclass(frozen=True)
class Artifact:
    """One exported model as the export stage wrote it (see ``export.manifest``)."""

    model: str
    onnx_path: Path
    onnx_sha256: str
    opset: int
    input_name: str
    input_shape: list  # e.g. ["batch", 3, 224, 224] (dynamic) or [8, 3, 224, 224]
    output_name: str
    paddle_model_file: Path | None = None  # Paddle inference model (.json), for the paddle baseline
    paddle_params_file: Path | None = None
    manifest: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_manifest(cls, manifest_path: Path) -> Artifact:
        manifest_path = Path(manifest_path)
        data = json.loads(manifest_path.read_text())
        root = manifest_path.parent
        paddle = data.get("paddle_model") or {}
        return cls(
            model=data["model"],
            onnx_path=(root / data["onnx"]["file"]).resolve(),
            onnx_sha256=data["onnx"]["sha256"],
            opset=data["opset"]["written"],
            input_name=data["onnx"]["inputs"][0]["name"],
            input_shape=data["onnx"]["inputs"][0]["shape"],
            output_name=data["onnx"]["outputs"][0]["name"],
            paddle_model_file=(root / paddle["model_file"]).resolve() if paddle else None,
            paddle_params_file=(root / paddle["params_file"]).resolve() if paddle else None,
            manifest=data,
        )


@dataclass
class RuntimeOptions:
    """What the user asked of a runtime. ``effective`` in the adapter records what actually ran."""

    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N" | "gpu" | "auto" (per runtime)
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16" | "int8"
    threads: int | None = None  # None: one per physical core visible to the process
    batch: int = 1
    max_batch: int | None = None  # TensorRT profile upper bound; defaults to batch
    extra: dict[str, Any] = field(default_factory=dict)  # runtime-specific knobs (e.g. ov hint, ort provider)

    def to_dict(self) -> dict:
        return asdict(self)


class Runtime(abc.ABC):
    """One inference engine bound to one artifact on one device."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, options: RuntimeOptions) -> None:
        if options.precision not in self.precisions:
            raise ValueError(
                f"runtime {self.name!r} does not support precision {options.precision!r}; "
                f"choose one of {', '.join(self.precisions)}"
            )
        self.options = options
        self.effective: dict[str, Any] = {}  # settings that actually took effect, recorded with results
        self.notes: list[str] = []  # anything a reader must know (fallbacks, lowered precision)
        self._state = "new"

    # --- availability -------------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def probe(cls) -> Availability:
        """Can this runtime run here? Must not raise; may import its package."""

    # --- lifecycle ----------------------------------------------------------------------------------------
    def load(self, artifact: Artifact) -> None:
        self._expect("new")
        log.info("%s: loading %s", self.name, artifact.onnx_path.name)
        self._load(artifact)
        self.artifact = artifact
        self._state = "loaded"

    def prepare(self, feeds: dict[str, np.ndarray]) -> None:
        self._expect("loaded", "prepared")
        self._prepare(feeds)
        self._state = "prepared"

    def run(self) -> None:
        if self._state != "prepared":
            raise LifecycleError(f"{self.name}: call prepare() before run() (state: {self._state})")
        self._run()

    def outputs(self) -> dict[str, np.ndarray]:
        self._expect("prepared")
        return self._outputs()

    def close(self) -> None:
        if self._state != "closed":
            self._close()
            self._state = "closed"

    def versions(self) -> dict[str, str]:
        return {}

    def device_time_ms(self) -> float | None:
        """Device-side time of the last run() where the API offers it (CUDA events); else None."""
        return None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _expect(self, *states: str) -> None:
        if self._state not in states:
            raise LifecycleError(f"{self.name}: expected state {' or '.join(states)}, got {self._state}")

    # --- hooks --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self, artifact: Artifact) -> None: ...

    @abc.abstractmethod
    def _prepare(self, feeds: dict[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def _run(self) -> None: ...

    @abc.abstractmethod
    def _outputs(self) -> dict[str, np.ndarray]: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass
