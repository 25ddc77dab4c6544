"""One benchmark cell as asked: what to run, on which runtime with which options, how to measure, whether
to measure drift, and where the record goes. Built from bench.yaml + CLI flags (or a sweep plan), validated
once by :func:`validate`, and passed whole to a sweep's cell process as JSON.

The batch travels on one channel only: ``runtime.batch`` (the runtime is built for it, the harness feeds it,
a fixed-batch export is made for it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.accuracy.drift_pass import DriftSettings
from bench.config import OPSET_RANGE, canonical_runtime, expand_model_patterns
from bench.harness.measure import MeasureParams
from bench.records import DEFAULT_RESULTS
from core.manifest import ManifestError, load_manifest, manifest_path_of
from core.yamlio import ConfigError
from export.optimize.levels import DEFAULT_LEVEL, LevelError, check_level, check_runtime
from export.quantize import Int8Recipe
from runtimes.base import OptionError, Runtime, RuntimeOptions, RuntimeUnavailable

DEFAULT_ARTIFACTS = Path("artifacts")


class UsageError(ValueError):
    """The request itself is invalid (exit 2)."""


@dataclass
class Target:
    """The model a cell runs: a zoo model's export (made if missing) or a manifest the user brings."""

    model: str | None = None
    manifest: str | None = None
    opset: int = 17
    weights: str = "seeded"
    fixed_batch_export: bool = False  # export with the run's batch instead of a dynamic one
    artifacts: str = str(DEFAULT_ARTIFACTS)
    no_export: bool = False
    optimize: str = DEFAULT_LEVEL  # graph optimisation level of the export (export.optimize.levels)
    # int8 models made by the export stage: their calibration set and accuracy control (None: the defaults)
    calibration: str | None = None
    calibration_size: int | None = None
    max_drop: float | None = None
    # On a cluster node: the driver's export as shipped here, its files checked by sha256 on arrival. It is run as
    # the export stage's own (the driver judged it current), so the node neither re-exports nor compares its own
    # package versions with the driver's; the cell keeps the key of the model it stands for.
    shipped_manifest: str | None = None

    @property
    def int8_recipe(self) -> Int8Recipe:
        return Int8Recipe(self.calibration, self.calibration_size, self.max_drop)

    def export_batch(self, batch: int) -> str | int:
        return batch if self.fixed_batch_export else "dynamic"

    @property
    def weights_key(self) -> str:
        """The weights part of the cell key; a manifest run is keyed by its manifest."""
        # a non-default optimisation level or int8 recipe is another model: another cell
        recipe = [f"{name}={value}" for name, value in self.int8_recipe.asked().items()]
        if not self.manifest:
            parts = [self.weights] + ([f"optimize={self.optimize}"] if self.optimize != DEFAULT_LEVEL else [])
            return "+".join(parts + recipe)
        return "+".join([f"manifest:{manifest_path_of(Path(self.manifest)).resolve()}", *recipe])


@dataclass
class Output:
    results: str = str(DEFAULT_RESULTS)
    run_id: str | None = None
    record_id: str | None = None


@dataclass
class BenchRequest:
    runtime_name: str
    target: Target
    runtime: RuntimeOptions
    measure: MeasureParams = field(default_factory=MeasureParams)
    drift: DriftSettings | None = None
    output: Output = field(default_factory=Output)
    enforce_gates: bool = False
    host_target: str | None = None  # a cluster sweep's kind of node for this cell (bench.yaml targets:); None: any

    @property
    def batch(self) -> int:
        return self.runtime.batch

    @property
    def label(self) -> str:
        what = self.target.model or self.target.manifest
        label = f"{what} opset {self.target.opset} {self.runtime_name}/{self.runtime.precision} batch {self.batch}"
        if self.runtime.scenario == "throughput":
            label += f" throughput x{self.runtime.requests or ' auto'}"
        return label + (f" [{self.host_target}]" if self.host_target else "")

    @property
    def cell_key(self) -> tuple:
        from bench.records import cell_key

        return cell_key(self.target.model, self.target.opset, self.batch, self.runtime_name,
                        self.runtime.precision, self.target.weights_key, self.runtime.scenario,
                        self.runtime.requests, self.runtime.threads)

    @property
    def sweep_key(self) -> tuple:
        """The cell on its target, as ``Record.sweep_key`` reads it back."""
        return self.cell_key, self.host_target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRequest:
        return cls(
            runtime_name=data["runtime_name"],
            target=Target(**data["target"]),
            runtime=RuntimeOptions(**data["runtime"]),
            measure=MeasureParams(**data["measure"]),
            drift=DriftSettings(**data["drift"]) if data.get("drift") else None,
            output=Output(**data["output"]),
            enforce_gates=bool(data.get("enforce_gates")),
            host_target=data.get("host_target"),
        )


def validate(request: BenchRequest) -> tuple[BenchRequest, type[Runtime]]:
    """Check everything that needs no heavy work; returns the resolved request and the adapter class.

    Raises UsageError for a bad request, RuntimeUnavailable when the adapter cannot be imported here.
    """
    from runtimes import get_runtime

    options = request.runtime
    if not isinstance(options.batch, int) or isinstance(options.batch, bool) or options.batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {options.batch}")
    if options.threads is not None and options.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {options.threads}")
    try:
        name = canonical_runtime(request.runtime_name)
        target = _resolve_target(request.target)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        check_level(target.optimize)
        if not target.manifest:
            check_runtime(target.optimize, name)
    except LevelError as exc:
        raise UsageError(str(exc)) from None
    _check_int8_settings(target, name, options.precision)
    _check_model_inputs(target)
    cls = get_runtime(name)
    options = replace(options, device=options.device or cls.devices[0])
    try:  # the one check of the options (runtimes.base.check_options) and the adapter's own, before heavy work
        cls(options)
    except (OptionError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    drift = request.drift
    if drift is not None:
        drift = replace(drift, cache_dir=str(Path(target.artifacts) / "reference-cache"))
    return replace(request, runtime_name=name, target=target, runtime=options, drift=drift), cls


def with_int8_recipe(target: Target, runtime: str, precision: str, recipe: Int8Recipe) -> Target:
    """``target`` with bench.yaml's ``export.int8`` recipe where it applies: int8 cells of ov and ort on models the
    export stage makes (``max_drop``, OpenVINO's accuracy control: ov only). Settings already on the target (the
    command line's flags) win; other cells run as they are."""
    try:
        runtime = canonical_runtime(runtime)
    except ConfigError:
        return target  # validate() reports the unknown runtime
    if not _makes_int8_model(runtime, precision) or (target.manifest and _manifest_precision(target) != "fp32"):
        return target  # a --manifest of an int8 model runs as it was made
    defaults = recipe.resolved().asked()
    if runtime != "ov":
        defaults.pop("max_drop", None)
    return replace(target, **{**defaults, **target.int8_recipe.asked()})


def _makes_int8_model(runtime: str, precision: str) -> bool:
    """Whether a cell runs an int8 model the export stage makes (``Runtime.int8_from_export``: ov's NNCF IR, ort's
    QDQ ONNX): the cells an int8 recipe shapes."""
    from runtimes import get_runtime

    if precision != "int8":
        return False
    try:
        return get_runtime(runtime).int8_from_export
    except (ValueError, RuntimeUnavailable):
        return False  # validate() reports the runtime


def _check_int8_settings(target: Target, runtime: str, precision: str) -> None:
    """--calibration, --calibration-size and --max-drop shape the int8 model the export stage makes."""
    flags = ", ".join(target.int8_recipe.flags())
    if not flags:
        return
    if not _makes_int8_model(runtime, precision):
        raise UsageError(f"{flags} make the int8 model of ov or ort: add --precision int8 (runtime ov or ort)")
    stored = _manifest_precision(target) if target.manifest else None
    if stored not in (None, "fp32"):
        raise UsageError(f"{flags} shape the int8 model the export stage makes from an fp32 export; "
                         f"{target.manifest} is already {stored}")
    if target.max_drop is not None and runtime != "ov":
        raise UsageError("--max-drop (NNCF's accuracy control) makes the OpenVINO int8 model: use --runtime ov")


def _manifest_precision(target: Target) -> str | None:
    """The precision of a ``--manifest`` target's model; None when unreadable (its cell reports that)."""
    try:
        return load_manifest(Path(target.manifest)).precision
    except ManifestError:
        return None


def _check_model_inputs(target: Target) -> None:
    """The files the user named for the model: a manifest that is no manifest, or a weights file that is not
    there, is theirs to fix before anything runs (a usage error, no record)."""
    from export.weights import WeightsError, check_source

    if target.manifest:
        try:
            load_manifest(manifest_path_of(Path(target.manifest)))
        except ManifestError as exc:
            raise UsageError(f"--manifest: {exc}") from None
        return
    try:
        check_source(target.weights)
    except WeightsError as exc:
        raise UsageError(str(exc)) from None


def _resolve_target(target: Target) -> Target:
    if target.manifest is not None:
        return target
    if not target.model:
        raise UsageError("--model or --manifest is required")
    matched = expand_model_patterns([target.model])
    if len(matched) > 1:
        raise UsageError(f"--model {target.model!r} matches {', '.join(matched)}; pick one "
                         f"(or run `python -m bench sweep`)")
    lo, hi = OPSET_RANGE
    if not lo <= target.opset <= hi:
        raise UsageError(f"invalid opset {target.opset}; allowed: {lo}..{hi}")
    return replace(target, model=matched[0])


def derived_precision(runtime: str, precision: str, device: str | None = None) -> tuple[str, str | None]:
    """(precision, runtime) of the export a cell of ``runtime`` at ``precision`` runs: ("fp32", None) for the fp32
    export itself (OpenVINO bf16/fp16 hints, TensorRT's builds, paddle), else the derived model's (int8 for ov and
    ort, an fp16 ONNX for ort)."""
    from export.quantize import int8_target, variant_for_run

    if variant_for_run(runtime, precision) is None:
        return "fp32", None
    return precision, int8_target(runtime, device) if precision == "int8" else None


def measure_params(warmup: int, iterations: int, min_duration_s: float, max_duration_s: float, scope: str,
                   seed: int) -> MeasureParams:
    """MeasureParams with its checks turned into a UsageError naming the flags."""
    try:
        return MeasureParams(warmup, iterations, min_duration_s, max_duration_s, scope, seed)
    except ValueError as exc:
        raise UsageError(f"{exc} (--warmup, --iterations, --duration, --max-duration, --scope)") from None
