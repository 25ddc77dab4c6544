"""The one way the benchmark stage makes a missing export: ``python -m export`` in a child process.

A child, because paddle (and its thread pools) must not share the process being timed, and a paddle2onnx
abort must not take the caller down. The child dies with its parent and is stopped with SIGTERM (so it
removes its unfinished folder) on timeout or Ctrl-C. Once it has exited, however it ended (a crash while
stopping, SIGKILL after the grace period), whatever temporary folder it left is removed here.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from core.manifest import MANIFEST_NAME
from core.proc import describe_exit, python_module, run_child
from core.progress import ChildStages
from export.optimize.levels import DEFAULT_LEVEL
from export.quantize import Int8Recipe

log = logging.getLogger(__name__)

EXPORT_TIMEOUT_S = 1800.0


class ExportFailed(RuntimeError):
    """The export child failed; the message is its own error line."""


@dataclass(frozen=True)
class ExportSpec:
    model: str
    opset: int
    batch: str | int
    weights: str
    artifacts: Path
    precision: str = "fp32"  # int8 / fp16: the model derived from the fp32 export (export.quantize)
    runtime: str | None = None  # int8: the runtime it is quantized for
    optimize: str = DEFAULT_LEVEL  # the fp32 export's graph optimisation level (export.optimize)
    quantization: Int8Recipe | None = None  # int8: calibration set and accuracy control (None: the defaults)
    source_manifest: Path | None = None  # derive from this fp32 export (a --manifest target) as it is

    @property
    def fp32_manifest_path(self) -> Path:
        from export.request import artifact_dir

        if self.source_manifest is not None:
            return self.source_manifest
        return artifact_dir(self.model, self.opset, self.batch, self.weights, self.artifacts,
                            self.optimize) / MANIFEST_NAME

    @property
    def variant(self) -> str | None:
        from export.quantize import variant_of

        return None if self.precision == "fp32" else variant_of(self.precision, self.runtime)

    @property
    def manifest_path(self) -> Path:
        if self.variant is None:
            return self.fp32_manifest_path
        from export.layout import derived_dir

        return derived_dir(self.fp32_manifest_path.parent, self.variant) / MANIFEST_NAME

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def ready(self) -> bool:
        """The export (and the model derived from it) is on disk and current: what ``python -m export`` would
        make now, by the export's own cache keys (code, package versions, weights, calibration set, and for a
        derived model the fp32 export it came from). A stale export is rebuilt, never measured as current."""
        if not self.exists():
            return False
        from export.freshness import is_current

        try:
            return is_current(self.command())
        except Exception as exc:  # undecided: the export process decides, and reports any error
            log.debug("could not check %s: %s", self.manifest_path, exc)
            return False

    def command(self) -> list[str]:
        derived = ["--precision", self.precision] + (["--runtime", self.runtime] if self.runtime else []) \
            if self.variant else []
        if self.variant and self.quantization:
            derived += self.quantization.export_flags()
        if self.source_manifest is not None:
            return ["--manifest", str(self.source_manifest), *derived]
        return ["--model", self.model, "--opset", str(self.opset), "--batch", str(self.batch),
                "--weights", self.weights, "--out", str(self.artifacts), "--optimize", self.optimize, *derived]

    def shell_command(self) -> str:
        """What a user would type to make this export."""
        if self.source_manifest is not None:
            return " ".join(["python -m export", *map(shlex.quote, self.command())])
        parts = ["python -m export", f"--model {self.model}", f"--opset {self.opset}"]
        if self.batch != "dynamic":
            parts.append(f"--batch {self.batch}")
        if self.weights != "seeded":
            parts.append(f"--weights {self.weights}")
        if self.optimize != DEFAULT_LEVEL:
            parts.append(f"--optimize {self.optimize}")
        if Path(self.artifacts) != Path("artifacts"):
            parts.append(f"--out {self.artifacts}")
        if self.variant:
            parts.append(f"--precision {self.precision}" + (f" --runtime {self.runtime}" if self.runtime else ""))
            if self.quantization:
                parts += self.quantization.export_flags()
        return " ".join(parts)


def launch_export(spec: ExportSpec, timeout_s: float = EXPORT_TIMEOUT_S, pass_fds: tuple[int, ...] = ()) -> Path:
    """Export in a child (cached exports return at once); the manifest path, or ExportFailed. ``pass_fds``:
    descriptors the child keeps open (a sweep's lock)."""
    from export.layout import remove_stale_temp

    log.info("%s opset %s %s: exporting in a child process", spec.model, spec.opset, spec.precision)
    what = f"{spec.model} opset {spec.opset}" + (f" {spec.variant}" if spec.variant else "")
    try:
        with ChildStages(f"export {what}") as stages:  # a bar on a terminal, following the child's stages
            child = run_child(python_module("export", *spec.command()), timeout_s, env={**os.environ, **stages.env},
                              pass_fds=pass_fds + stages.fds)
    finally:  # the child is gone by now: a folder named after it is stale
        remove_stale_temp(spec.manifest_path.parent.parent)
    if child.timed_out:
        raise ExportFailed(f"export of {what} did not finish within {timeout_s:.0f} s")
    path = spec.manifest_path
    if child.returncode != 0 or not path.is_file():
        raise ExportFailed(f"export of {what} failed "
                           f"({describe_exit(child.returncode)}): "
                           + child.error_line.replace("pass --out DIR", "pass --artifacts DIR"))
    return path
