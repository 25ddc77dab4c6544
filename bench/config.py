"""bench.yaml -> frozen, validated dataclasses.

Layering: dataclass defaults -> bench.yaml -> CLI flags (applied by ``bench.request``). Validation has no
side effects, and every error names the file, the line, the key path and the allowed values, e.g.
``bench.yaml:14: sweep.runtimes[2]: unknown runtime 'tensorrtx'; allowed: ort, ov, paddle, trt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.accuracy.gates import DEFAULT_GATES, GATE_METRICS
from bench.budgets import Budgets, parse_section
from bench.harness.measure import SCENARIOS, SCOPES, MeasureParams
from bench.records import DEFAULT_RESULTS
from bench.targets import TargetSpec, parse_sweep_targets, parse_targets
from core.preprocess import PIPELINES
from core.yamlio import ConfigError, ConfigReader, load_yaml
from export.config import ExportConfig, parse_export_section, parse_models, parse_opsets
from export.convert import MAX_OPSET, MIN_OPSET
from export.models import MODELS, UnknownModelError, expand_models
from runtimes import canonical_name, get_runtime, is_runtime, list_runtimes
from runtimes.base import RuntimeUnavailable

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("bench.yaml")
ALL_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
GATE_PRECISIONS = (*ALL_PRECISIONS, "tf32")  # tf32: what GPU fp32 records when TF32 math ran
OPSET_RANGE = (MIN_OPSET, MAX_OPSET)  # what paddle2onnx can write
_FRACTION_METRICS = ("agreement", "cosine", "cosine_mean")


def runtime_names() -> tuple[str, ...]:
    """Runtime names to offer in messages (the test runtime ``null`` is accepted but not advertised)."""
    return tuple(list_runtimes())


def canonical_runtime(name: Any) -> str:
    """The registry key for ``name`` (aliases resolved); ``ConfigError`` naming the allowed ones otherwise."""
    if isinstance(name, str) and is_runtime(name):
        return canonical_name(name)
    hint = " (YAML reads a bare null as nothing: write \"null\" in quotes)" if name is None else ""
    raise ConfigError(f"unknown runtime {name!r}; allowed: {', '.join(runtime_names())}{hint}")


def runtime_precisions(name: str) -> tuple[str, ...]:
    """Precisions the adapter declares; all known ones if its class cannot be imported here."""
    try:
        return tuple(get_runtime(name).precisions)
    except RuntimeUnavailable as exc:
        log.debug("precisions of %s unknown here (%s)", name, exc)
        return ALL_PRECISIONS


def expand_model_patterns(patterns: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Zoo model names for fnmatch patterns; ``ConfigError`` naming the known models otherwise."""
    try:
        return expand_models(patterns)
    except UnknownModelError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class SweepConfig:
    models: tuple[str, ...] = tuple(MODELS)
    opsets: tuple[int, ...] = (13, 17)
    runtimes: tuple[str, ...] = ("paddle", "ort", "ov")
    precisions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # runtime -> precisions (def. fp32)
    batches: tuple[int, ...] = (1, 8)
    devices: dict[str, str] = field(default_factory=dict)  # runtime -> device; default: the adapter's first
    manifests: tuple[str, ...] = ()  # pre-exported models to sweep too ("bring your own model")
    cell_timeout_s: float = 1800.0
    drift_data: str | None = "export"  # data set of each cell's drift pass; None: timing only
    drift_labels: str | None = None
    drift_preprocess: str | None = None  # PaddleClas pipeline of the drift images; None: the export's (eval)
    scenarios: tuple[str, ...] = ()  # empty: measure.scenario
    requests: tuple[int | None, ...] = (None,)  # throughput cells: requests in flight (None: the runtime's own)
    targets: tuple[str, ...] = ()  # names from bench.yaml targets: (a cluster sweep's node kinds); empty: any node

    def precisions_for(self, runtime: str) -> tuple[str, ...]:
        return self.precisions.get(runtime, ("fp32",))


@dataclass(frozen=True)
class MeasureConfig(MeasureParams):
    """The harness's measurement parameters plus what every runtime is built for: the thread count, the
    scenario and, for the throughput scenario, the requests in flight (None: the runtime's recommendation)."""

    threads: int | None = None
    scenario: str = "latency"
    requests: int | None = None


@dataclass(frozen=True)
class BenchConfig:
    export: ExportConfig = field(default_factory=ExportConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    gates: dict[str, dict[str, float]] = field(default_factory=lambda: dict(DEFAULT_GATES))
    results: Path = DEFAULT_RESULTS
    artifacts: Path = Path("artifacts")
    source: str = "defaults"
    recommend: Budgets | None = None  # the report's Recommendation section (None: no budget set, no section)
    cluster: str | None = None  # Ray address of a sweep across hosts (bench.cluster); None: run locally
    targets: dict[str, TargetSpec] = field(default_factory=dict)  # kinds of cluster node (bench.targets)


def load_config(path: Path | None = None) -> BenchConfig:
    """Read ``path`` (default ``bench.yaml`` if present; built-in defaults otherwise)."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return BenchConfig()
        path = DEFAULT_CONFIG
    path = Path(path)
    data, lines = load_yaml(path)
    return config_from_dict(data or {}, source=path.name, lines=lines)


def config_from_dict(data: Any, source: str = "bench.yaml", lines: dict[str, int] | None = None) -> BenchConfig:
    return _Parser(source, lines).config(data)


class _Parser(ConfigReader):
    """Walks the YAML tree, keeping the key path so every error can name it."""

    # --- sections -------------------------------------------------------------------------------------
    def config(self, data: Any) -> BenchConfig:
        section = self.mapping(data, "", ("export", "sweep", "measure", "gates", "results", "artifacts", "recommend",
                                          "cluster", "targets"))
        default = BenchConfig()
        targets = parse_targets(self, section.get("targets", {}))
        return BenchConfig(
            export=parse_export_section(self, section.get("export", {})),
            sweep=self.sweep(section.get("sweep", {}), targets),
            measure=self.measure(section.get("measure", {})),
            gates=self.gates(section["gates"]) if "gates" in section else dict(DEFAULT_GATES),
            results=Path(self.string(section.get("results", str(default.results)), "results")),
            artifacts=Path(self.string(section.get("artifacts", str(default.artifacts)), "artifacts")),
            source=self.source,
            recommend=parse_section(self, section.get("recommend")),
            cluster=None if section.get("cluster") is None else self.string(section["cluster"], "cluster"),
            targets=targets,
        )

    def sweep(self, data: Any, targets: dict[str, TargetSpec]) -> SweepConfig:
        d = self.mapping(data, "sweep", ("models", "opsets", "runtimes", "precisions", "batches", "devices",
                                         "manifests", "cell_timeout_s", "drift", "scenarios", "requests", "targets"))
        default = SweepConfig()
        runtimes = default.runtimes
        if "runtimes" in d:
            runtimes = tuple(self.runtime(r, f"sweep.runtimes[{i}]")
                             for i, r in enumerate(self.sequence(d["runtimes"], "sweep.runtimes")))
        precisions: dict[str, tuple[str, ...]] = {}
        for name, values in self.mapping(d.get("precisions", {}), "sweep.precisions", None).items():
            name = self.runtime(name, f"sweep.precisions.{name}")
            allowed = runtime_precisions(name)
            key = f"sweep.precisions.{name}"
            listed = self.sequence(values, key)
            for i, p in enumerate(listed):
                if p not in allowed:
                    raise self.fail(f"{key}[{i}]", f"runtime {name!r} does not support precision {p!r}; "
                                                   f"allowed: {', '.join(allowed)}")
            precisions[name] = tuple(listed)
        devices = {}
        for name, device in self.mapping(d.get("devices", {}), "sweep.devices", None).items():
            name = self.runtime(name, f"sweep.devices.{name}")
            devices[name] = self.string(device, f"sweep.devices.{name}")
        batches = default.batches
        if "batches" in d:
            batches = tuple(self.positive_int(b, f"sweep.batches[{i}]")
                            for i, b in enumerate(self.sequence(d["batches"], "sweep.batches")))
        manifests: tuple[str, ...] = ()
        if d.get("manifests"):
            manifests = tuple(self.string(m, f"sweep.manifests[{i}]")
                              for i, m in enumerate(self.sequence(d["manifests"], "sweep.manifests")))
        drift_data, drift_labels, drift_preprocess = self.sweep_drift(d, default)
        return SweepConfig(
            drift_data=drift_data,
            drift_labels=drift_labels,
            drift_preprocess=drift_preprocess,
            scenarios=self.scenarios(d["scenarios"]) if "scenarios" in d else default.scenarios,
            requests=self.requests_axis(d["requests"]) if "requests" in d else default.requests,
            models=self.models(d["models"], "sweep.models") if "models" in d else default.models,
            opsets=self.opsets(d["opsets"], "sweep.opsets") if "opsets" in d else default.opsets,
            runtimes=runtimes,
            precisions=precisions,
            batches=batches,
            devices=devices,
            manifests=manifests,
            cell_timeout_s=self.number(d.get("cell_timeout_s", default.cell_timeout_s),
                                       "sweep.cell_timeout_s", positive=True),
            targets=parse_sweep_targets(self, d["targets"], targets) if d.get("targets") else default.targets,
        )

    def sweep_drift(self, d: dict, default: SweepConfig) -> tuple[str | None, str | None, str | None]:
        """sweep.drift: (data, labels, preprocess); data None when the drift pass is off."""
        if "drift" not in d:
            return default.drift_data, default.drift_labels, None
        drift = d["drift"]
        if drift in (None, False):
            return None, default.drift_labels, None
        drift = self.mapping(drift, "sweep.drift", ("data", "labels", "preprocess"))
        data = self.string(drift.get("data", default.drift_data), "sweep.drift.data")
        labels = default.drift_labels
        if drift.get("labels") is not None:
            labels = self.string(drift["labels"], "sweep.drift.labels")
        preprocess = None
        if drift.get("preprocess") is not None:
            preprocess = self.choice(drift["preprocess"], "sweep.drift.preprocess", PIPELINES,
                                     what="preprocessing pipeline")
        return data, labels, preprocess

    def measure(self, data: Any) -> MeasureConfig:
        d = self.mapping(data, "measure", ("warmup", "iterations", "min_duration_s", "max_duration_s",
                                           "scope", "threads", "seed", "scenario", "requests"))
        m = MeasureConfig()
        warmup = self.integer(d.get("warmup", m.warmup), "measure.warmup", minimum=0)
        iterations = self.positive_int(d.get("iterations", m.iterations), "measure.iterations")
        min_s = self.number(d.get("min_duration_s", m.min_duration_s), "measure.min_duration_s")
        max_s = self.number(d.get("max_duration_s", m.max_duration_s), "measure.max_duration_s",
                            positive=True)
        if max_s < min_s:
            raise self.fail("measure.max_duration_s", f"{max_s} is below min_duration_s {min_s}")
        threads = d.get("threads", m.threads)
        if threads is not None:
            threads = self.positive_int(threads, "measure.threads")
        requests = d.get("requests", m.requests)
        if requests is not None:
            requests = self.positive_int(requests, "measure.requests")
        return MeasureConfig(
            warmup=warmup, iterations=iterations, min_duration_s=min_s, max_duration_s=max_s,
            scope=self.choice(d.get("scope", m.scope), "measure.scope", SCOPES, what="scope"),
            threads=threads, seed=self.integer(d.get("seed", m.seed), "measure.seed", minimum=0),
            scenario=self.choice(d.get("scenario", m.scenario), "measure.scenario", SCENARIOS, what="scenario"),
            requests=requests,
        )

    def gates(self, data: Any) -> dict[str, dict[str, float]]:
        gates: dict[str, dict[str, float]] = {}
        for precision, metrics in self.mapping(data, "gates", None).items():
            key = f"gates.{precision}"
            self.choice(precision, key, GATE_PRECISIONS, what="precision")
            gates[precision] = {}
            for metric, value in self.mapping(metrics, key, GATE_METRICS).items():
                mkey = f"{key}.{metric}"
                value = self.number(value, mkey)
                if metric in _FRACTION_METRICS and not 0 <= value <= 1:
                    raise self.fail(mkey, f"{value} is outside [0, 1]")
                gates[precision][metric] = value
        return gates

    # --- values ---------------------------------------------------------------------------------------
    def models(self, data: Any, key: str) -> tuple[str, ...]:
        # An empty sweep.models is allowed: a sweep of sweep.manifests only.
        return parse_models(self, data, key, allow_empty=key == "sweep.models")

    def opsets(self, data: Any, key: str) -> tuple[int, ...]:
        return parse_opsets(self, data, key)

    def scenarios(self, data: Any) -> tuple[str, ...]:
        listed = self.sequence(data, "sweep.scenarios")
        return tuple(dict.fromkeys(self.choice(v, f"sweep.scenarios[{i}]", SCENARIOS, what="scenario")
                                   for i, v in enumerate(listed)))

    def requests_axis(self, data: Any) -> tuple[int | None, ...]:
        """Requests in flight of the throughput cells; null: the runtime's recommendation."""
        listed = self.sequence(data, "sweep.requests")
        return tuple(dict.fromkeys(None if v is None else self.positive_int(v, f"sweep.requests[{i}]")
                                   for i, v in enumerate(listed)))

    def runtime(self, name: Any, key: str) -> str:
        try:
            return canonical_runtime(name)
        except ConfigError as exc:
            raise self.fail(key, str(exc)) from None
