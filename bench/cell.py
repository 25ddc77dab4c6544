"""Run one benchmark cell: validate -> find (or make) the export -> check drift inputs -> load and measure
-> drift pass -> one record. Every expected failure becomes an error record carrying whatever was known
when it happened (the runtime's effective settings and notes included)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.accuracy.drift_pass import PreparedDrift, prepare_drift, run_drift
from bench.accuracy.gates import drift_failed
from bench.harness import env
from bench.harness.footprint import BatchTooLarge, check_fits
from bench.harness.machine import MachineWatch, available_memory_bytes
from bench.harness.measure import measure
from bench.launcher import ExportSpec, launch_export
from bench.records import ErrorInfo, ModelInfo, Params, Record, RuntimeInfo, Timing, new_run_id
from bench.request import BenchRequest, UsageError, derived_precision, validate
from core.artifact import Artifact, ArtifactError
from core.datasets import DataError
from core.manifest import ManifestError, load_manifest, manifest_path_of
from core.proc import ChildResult, describe_exit
from core.progress import say
from export.quantize import Int8Recipe
from runtimes.base import Runtime

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class BenchFailure(RuntimeError):
    """The request is valid but could not be carried out here (exit 1)."""


# A drift pass runs after timing, on the still-open runtime, and returns (drift, gates) for the record.
DriftPass = Callable[[Runtime, Artifact, BenchRequest], tuple[dict | None, dict | None]]


@dataclass
class CellResult:
    record: Record
    exit_code: int
    exception: BaseException | None = None

    @property
    def usage_error(self) -> bool:
        return self.exit_code == EXIT_USAGE


class Draft:
    """The record under construction; whatever is known when a run fails still goes into its error record."""

    def __init__(self, request: BenchRequest) -> None:
        self.request = request
        target, options, m = request.target, request.runtime, request.measure
        self.model = ModelInfo(name=target.model, opset=target.opset, batch=target.export_batch(options.batch),
                               manifest=target.manifest, weights={"requested": target.weights_key})
        self.runtime = RuntimeInfo(name=request.runtime_name, device=options.device,
                                   precision=options.precision)
        self.params = Params(batch=options.batch, warmup=m.warmup, iterations=m.iterations,
                             min_duration_s=m.min_duration_s, max_duration_s=m.max_duration_s, scope=m.scope,
                             threads=options.threads, seed=m.seed, scenario=options.scenario,
                             requests=options.requests)
        self.drift: dict | None = None
        self.gates: dict | None = None
        self.explain: dict | None = None  # where the drift starts, for a cell that failed its gates
        self.machine: dict | None = None  # load around the measurement (bench.harness.machine)
        self.memory: dict | None = None

    def record(self, status: str, timing: dict | None = None, error: BaseException | None = None,
               error_type: str | None = None) -> Record:
        err = None
        if error is not None:
            err = ErrorInfo(type=error_type or type(error).__name__, message=str(error) or type(error).__name__)
        output = self.request.output
        record = Record(run_id=output.run_id or new_run_id(), status=status, error=err, model=self.model,
                        runtime=self.runtime, params=self.params, timing=Timing.from_dict(timing),
                        drift=self.drift, gates=self.gates, explain=self.explain, machine=self.machine,
                        memory=self.memory,
                        environment=env.capture_environment(),
                        git=env.git_info())
        if self.request.host_target:  # a cluster sweep's cell (bench.cluster adds the node that ran it)
            record.placement = {"target": self.request.host_target}
        if output.record_id:
            record.record_id = output.record_id
        return record


def skeleton_record(request: BenchRequest, status: str, error_type: str, message: str) -> Record:
    """A record for a cell that never ran (runtime unavailable, export failed, cell crashed)."""
    return Draft(request).record(status, error=RuntimeError(message), error_type=error_type)


def lost_cell_record(request: BenchRequest, child: ChildResult, timeout: float) -> Record:
    """The error record of a cell process that ended without writing its own (killed on timeout, crashed)."""
    if child.timed_out:
        kind, message = "CellTimeout", f"cell killed after {timeout:g} s (sweep.cell_timeout_s)"
    else:
        kind = "CellCrashed"
        message = f"cell process ended with {describe_exit(child.returncode)} and no record"
    if child.error_line:
        message += f"; last output: {child.error_line}"
    return skeleton_record(request, "error", kind, message)


def run_cell(request: BenchRequest, drift_pass: DriftPass | None = None) -> CellResult:
    """Validate, resolve the artifact, measure; return the record. Expected failures become error records."""
    draft = Draft(request)
    try:
        request, runtime_cls = validate(request)
        draft = Draft(request)
        timing = _run(request, runtime_cls, draft, drift_pass)
    except UsageError as exc:
        return CellResult(draft.record("error", error=exc), EXIT_USAGE, exc)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # adapters raise their engines' own types; all become records
        log.debug("run failed", exc_info=True)
        return CellResult(draft.record("error", error=exc), EXIT_FAILED, exc)
    return CellResult(draft.record("ok", timing=timing), EXIT_OK)


@dataclass
class OpenCell:
    """A cell ready to measure: its request and draft record, the verified artifact, the runtime (constructed, not
    loaded), its drift data when it has a drift pass, and the memory estimate for its batch."""

    request: BenchRequest
    draft: Draft
    artifact: Artifact
    runtime: Runtime
    prepared: PreparedDrift | None
    memory: dict

    @property
    def label(self) -> str:
        options = self.request.runtime
        return f"{self.request.runtime_name} {options.precision}, batch {options.batch}"


def open_cell(request: BenchRequest, runtime_cls: type[Runtime], draft: Draft, with_drift: bool = True) -> OpenCell:
    """Probe the runtime, resolve and verify the artifact, check the drift data (``with_drift``) and the memory
    for the batch, construct the runtime: everything before the load, each failure raised as its record says."""
    from runtimes import probe

    options = request.runtime
    availability = probe(request.runtime_name, device=options.device)
    if not availability.available:
        raise BenchFailure(f"runtime {request.runtime_name!r} is not available: {availability.reason}")
    artifact = _load_artifact(resolve_manifest(request), draft)
    prepared = _prepare_drift(request, artifact) if with_drift else None
    memory = _check_memory(artifact, options.batch)
    runtime = runtime_cls(options)
    draft.runtime.options_asked = options.to_dict()
    return OpenCell(request, draft, artifact, runtime, prepared, memory)


def note_runtime(cell: OpenCell) -> None:
    """What the adapter learnt (versions, effective settings, fallbacks) into the record, also after a failure."""
    cell.draft.runtime.versions = _versions(cell.runtime)
    cell.draft.runtime.effective = dict(cell.runtime.effective)
    cell.draft.runtime.notes = list(cell.runtime.notes)


def drift_of(cell: OpenCell, drift_pass: DriftPass | None = None) -> None:
    """The drift pass on the still-open runtime (``drift_pass``, or the request's own when it has one)."""
    request, draft, runtime = cell.request, cell.draft, cell.runtime
    if drift_pass is not None:
        draft.drift, draft.gates = drift_pass(runtime, cell.artifact, request)
    elif cell.prepared is not None:
        say(f"drift pass on {len(cell.prepared.dataset)} images"
            + ("" if cell.prepared.stored is not None else " (Paddle's reference computed first, then cached)"))
        # Gates judge what ran: bf16 asked but run as fp32 must meet the fp32 thresholds.
        precision = runtime.effective.get("precision") or request.runtime.precision
        draft.drift, draft.gates = run_drift(runtime, cell.artifact, request.runtime.batch, precision, cell.prepared)


def close_cell(cell: OpenCell, machine: dict | None) -> None:
    """The machine section into the record, and the explain pass when the drift gates failed."""
    cell.draft.machine = {**(machine or {}), "memory_estimate": cell.memory}
    if drift_failed(cell.draft.gates):
        cell.draft.explain = _explain(cell.request, cell.artifact, cell.draft)


def _run(request: BenchRequest, runtime_cls: type[Runtime], draft: Draft, drift_pass: DriftPass | None) -> dict:
    watch = MachineWatch()  # from here on, other processes' CPU use is counted
    cell = open_cell(request, runtime_cls, draft, with_drift=drift_pass is None)
    m = request.measure
    say(f"measuring {cell.artifact.model} on {cell.label}: load, {m.warmup} warm-up runs, then at least "
        f"{m.iterations} runs and {m.min_duration_s:g} s")
    try:
        try:
            watch.begin()
            result = measure(cell.runtime, cell.artifact, request.runtime.batch, m)
            draft.memory = result.memory
        finally:
            watch.end()
            note_runtime(cell)  # whatever the adapter learnt before a failure belongs in the record
        drift_of(cell, drift_pass)
    finally:
        cell.runtime.close()
    close_cell(cell, watch.section())
    return result.timing_dict()


def _explain(request: BenchRequest, artifact: Artifact, draft: Draft) -> dict:
    """The explain pass of a cell that failed its drift gates (bounded; never fails the cell)."""
    from bench.explain.auto import explain_cell
    from core.cores import default_threads

    options = request.runtime
    log.info("drift gates failed: explaining where the drift starts")
    return explain_cell(request.runtime_name, options.precision, artifact, options.batch,
                        options.threads or default_threads(), draft.drift, Path(request.output.results),
                        (request.drift.gates if request.drift else None))


def _check_memory(artifact: Artifact, batch: int) -> dict:
    """Refuse a batch that cannot fit in memory before anything is allocated (a usage error)."""
    available = available_memory_bytes()
    try:
        footprint = check_fits(artifact, batch, available)
    except BatchTooLarge as exc:
        raise UsageError(str(exc)) from None
    return {"available_bytes": available, **(footprint.to_dict() if footprint else {})}


def _prepare_drift(request: BenchRequest, artifact: Artifact) -> PreparedDrift | None:
    if request.drift is None:
        return None
    try:
        return prepare_drift(request.drift, artifact)
    except DataError as exc:
        raise UsageError(f"drift data: {exc}") from None


def _versions(runtime: Runtime) -> dict[str, str]:
    try:
        return runtime.versions()
    except Exception as exc:  # must not hide the error that ended the run
        log.debug("%s: versions() failed: %s", runtime.name, exc)
        return {}


def export_spec(request: BenchRequest) -> ExportSpec | None:
    """The export a cell runs: the fp32 one, or the model derived from it (int8 for ov and ort, fp16 for ort). For a
    ``--manifest`` target: the model derived from that fp32 export, or None when the manifest's own model runs."""
    target, options = request.target, request.runtime
    derived = derived_precision(request.runtime_name, options.precision, options.device)
    int8 = target.int8_recipe if derived[0] == "int8" and target.int8_recipe.asked() else None
    if target.manifest:
        return _derived_of_manifest(manifest_path_of(Path(target.manifest)), derived, int8)
    return ExportSpec(target.model, target.opset, target.export_batch(request.batch), target.weights,
                      Path(target.artifacts), *derived, optimize=target.optimize, quantization=int8)


def _derived_of_manifest(path: Path, derived: tuple[str, str | None], int8: Int8Recipe | None) -> ExportSpec | None:
    """A brought (or any) fp32 export's reduced-precision model, made as ``python -m export --manifest`` makes it."""
    if derived[0] == "fp32":
        return None
    try:
        fp32 = load_manifest(path)
    except ManifestError:
        return None  # the cell reports the unreadable manifest itself
    if fp32.precision != "fp32":
        return None  # the manifest is a reduced-precision model already: it runs as it is
    return ExportSpec(fp32.model, fp32.opset_requested or fp32.opset_written, fp32.batch, "", path.parent.parent,
                      *derived, quantization=int8, source_manifest=path.resolve())


def resolve_manifest(request: BenchRequest) -> Path:
    """The manifest to run: ``--manifest`` (or the model derived from it for int8/fp16), or the export stage's;
    a missing or stale one is exported now unless ``--no-export``."""
    target = request.target
    if target.shipped_manifest:
        return Path(target.shipped_manifest)
    path = None
    if target.manifest:
        path = manifest_path_of(Path(target.manifest))
        if not path.is_file():
            raise BenchFailure(f"manifest {path} not found")
    spec = export_spec(request)
    if spec is None:
        return path
    if spec.ready():  # its cache key covers the optimisation level too
        return spec.manifest_path
    stale = spec.exists()
    if target.no_export:
        why = "was made by other code, package versions or inputs than these" if stale else "not found"
        if stale and spec.variant and spec.variant.startswith("int8"):
            why += (" (an int8 model made with --calibration, --calibration-size or --max-drop needs the same flags "
                    "here)")
        what = f"{spec.model} opset {spec.opset}" + (f" {spec.variant}" if spec.source_manifest else "")
        raise BenchFailure(f"{what} is not exported ({spec.manifest_path} {why}); run: {spec.shell_command()}")
    if stale:
        log.warning("%s is not what the export would make now (other code, package versions or inputs): "
                    "rebuilding it", spec.manifest_path)
    return launch_export(spec)


def reduced_precision_summary(manifest) -> dict:
    """What a record keeps of a derived model's ``reduced_precision``: method, parameters that decide accuracy,
    calibration identity (and any overlap with the evaluation images), source, and the layers kept float."""
    described = manifest.reduced_precision or {}
    calibration = described.get("calibration") or {}
    overlap = (calibration.get("overlaps_evaluation") or {}).get("count") or 0
    if overlap:
        log.warning("%s was calibrated on %d evaluation image(s) (--allow-eval-overlap): agreement measured on "
                    "them is optimistic", manifest.model, overlap)
    control = described.get("accuracy_control") or {}
    return {
        "method": described.get("method"),
        "recipe": (described.get("parameters") or {}).get("recipe"),
        "calibration": {k: calibration.get(k) for k in ("folder", "size", "files_sha256")} if calibration else None,
        "calibrated_on_evaluation_images": overlap,
        "layers_kept_float": control.get("layers_kept_float"),
        "source_sha256": (manifest.source or {}).get("sha256"),
    }


def _load_artifact(manifest_path: Path, draft: Draft) -> Artifact:
    try:
        artifact = Artifact.from_manifest(manifest_path)
    except ManifestError as exc:
        raise BenchFailure(str(exc)) from None
    manifest = artifact.manifest
    draft.model = replace(
        draft.model, name=artifact.model, opset_written=artifact.opset, batch=manifest.batch,
        sha256=artifact.sha256, manifest=str(artifact.manifest_path), precision=artifact.precision,
        weights={**draft.model.weights, **manifest.weights},
    )
    draft.model.extra["optimization"] = (manifest.optimization or {}).get("level", "none")
    if draft.request.target.manifest:  # bring-your-own: the manifest decides the opset
        draft.model.opset = manifest.opset_requested or artifact.opset
    if manifest.reduced_precision:  # every record of a derived model says how it was made
        draft.model.extra["reduced_precision"] = reduced_precision_summary(manifest)
    try:
        artifact.verify()
    except ArtifactError as exc:
        raise BenchFailure(str(exc)) from None
    return artifact
