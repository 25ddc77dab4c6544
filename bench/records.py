"""Result records: one JSON object per line, versioned, appended atomically; and the one reader of them.

A record is written for every run, successful or not, so a sweep's table always has every cell. Sections
are dataclasses; numbers are numbers (never formatted strings) and units live in the field names. Fields a
record lacks (an older schema, a failed run) read as None, so readers never guess.

Schema 2 (schema 1 records are read too; they lack ``machine`` and ``memory``)::

    schema_version, record_id, run_id, timestamp_utc, status ("ok" | "error" | "skipped"),
    error {type, message} | null,
    model {name, opset, opset_written, batch, sha256, manifest, weights, precision},
    runtime {name, versions, device, precision, options_asked, effective, notes},
    params {batch, warmup, iterations, min_duration_s, max_duration_s, scope, threads, seed, scenario,
            requests},
    timing {scope, scenario, requests, load_s, first_run_ms, latency_ms {...}, device_latency_ms {...} | null,
            throughput_ips, wall_s, warmup, stopped_by, cores_busy, notes} | null,
    drift | null, gates | null, explain | null, machine {...} | null, memory {...} | null, environment {...},
    git {...}, placement {target, node_id, node_ip, node_host, attempt, ...} (cluster sweeps only)

``placement`` (free-form, ``bench.cluster``) is written only by a sweep across hosts: the target the cell was placed
on (bench.yaml ``targets:``) and the Ray node that ran it; older and local records lack it.

``explain`` (free-form, ``bench.explain.report.section``) is written only for a cell that failed its drift
gates: the first diverging layer, the layers by error growth, the suggested fix; older records lack it.

Records written before the throughput scenario lack ``params.scenario``: they ran one request at a time, so
they read as the ``latency`` scenario (``Params.scenario_ran``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.files import append_line

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DEFAULT_RESULTS = Path("results/runs.jsonl")  # git-ignored; the committed reference lives elsewhere
READABLE_SCHEMAS = (1, 2)
STATUSES = ("ok", "error", "skipped")


class RecordError(ValueError):
    """A line or dict that is not a valid record."""


def new_run_id() -> str:
    """Sortable and unique enough: UTC time plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Section:
    """A record section: built from a dict leniently (unknown keys kept in ``extra``, missing ones None)."""

    @classmethod
    def from_dict(cls, data: Any):
        if data is None:
            return None
        if not isinstance(data, dict):
            raise RecordError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in names}
        obj = cls(**values)
        obj.extra = {k: v for k, v in data.items() if k not in names}
        return obj

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra", None) or {}
        return {**data, **extra}


@dataclass
class ModelInfo(Section):
    name: str | None = None
    opset: int | None = None  # asked
    opset_written: int | None = None
    batch: str | int | None = None  # the export's batch ("dynamic" or fixed)
    sha256: str | None = None  # of the model file that ran
    manifest: str | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None  # of the model file (int8 for a quantized export)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def weights_requested(self) -> str | None:
        return (self.weights or {}).get("requested")


@dataclass
class RuntimeInfo(Section):
    name: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    precision: str | None = None  # asked
    options_asked: dict[str, Any] | None = None
    effective: dict[str, Any] = field(default_factory=dict)  # what ran, read back from the engine
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def precision_ran(self) -> str | None:
        return (self.effective or {}).get("precision") or self.precision


@dataclass
class Params(Section):
    batch: int | None = None
    warmup: int | None = None
    iterations: int | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    scope: str | None = None
    threads: int | None = None
    seed: int | None = None
    scenario: str | None = None  # "latency" | "throughput"; None in older records: latency
    requests: int | None = None  # throughput: requests in flight asked (None: the runtime's recommendation)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scenario_ran(self) -> str:
        return self.scenario or "latency"


@dataclass
class Timing(Section):
    scope: str | None = None
    load_s: float | None = None
    first_run_ms: float | None = None
    latency_ms: dict[str, float] | None = None  # bench.harness.stats.LatencyStats as a dict
    device_latency_ms: dict[str, float] | None = None
    throughput_ips: float | None = None
    wall_s: float | None = None
    warmup: int | None = None
    stopped_by: str | None = None
    scenario: str | None = None
    requests: int | None = None  # in flight during the timed loop (1 in the latency scenario)
    cores_busy: float | None = None  # process CPU seconds per wall second over the timed loop
    notes: list[str] = field(default_factory=list)  # the harness's remarks (e.g. why throughput did not scale)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def latency(self, key: str) -> float | None:
        return finite((self.latency_ms or {}).get(key))


@dataclass
class ErrorInfo(Section):
    type: str = "Error"
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


def finite(value: Any) -> float | None:
    """A finite number, else None (absent, null, a string, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


_SECTIONS = {"model": ModelInfo, "runtime": RuntimeInfo, "params": Params, "timing": Timing,
             "error": ErrorInfo}
# recorded as measured; read by key
_FREE = ("drift", "gates", "explain", "machine", "memory", "environment", "git", "placement")


@dataclass
class Record:
    """One benchmark cell: what was asked, what ran, how fast, how far from Paddle, and where."""

    run_id: str
    status: str
    model: ModelInfo
    runtime: RuntimeInfo
    params: Params
    timing: Timing | None = None
    error: ErrorInfo | None = None
    drift: dict[str, Any] | None = None  # core.metrics.DriftResult + reference_source + data
    gates: dict[str, Any] | None = None  # bench.accuracy.gates.evaluate_gates
    explain: dict[str, Any] | None = None  # bench.explain: where a failed drift gate's error starts
    machine: dict[str, Any] | None = None  # load, frequency governor, busy processes around the cell
    memory: dict[str, Any] | None = None  # bench.harness.process: peak resident memory per phase, GPU memory
    environment: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, Any] | None = None  # bench.cluster: the target and the node that ran the cell
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp_utc: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    def check(self) -> None:
        """The invariants a written record keeps; ``RecordError`` says which one is broken."""
        if self.status not in STATUSES:
            raise RecordError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status != "ok" and not self.error:
            raise RecordError(f"a record with status {self.status!r} needs an error {{type, message}}")
        if self.status == "ok" and self.timing is None:
            raise RecordError("a record with status 'ok' needs timing")

    def to_dict(self) -> dict[str, Any]:
        head = {"schema_version": self.schema_version, "record_id": self.record_id, "run_id": self.run_id,
                "timestamp_utc": self.timestamp_utc, "status": self.status,
                "error": self.error.to_dict() if self.error else None}
        body = {name: (getattr(self, name).to_dict() if getattr(self, name) is not None else None)
                for name in ("model", "runtime", "params", "timing")}
        free = {name: getattr(self, name) for name in _FREE}
        if self.placement is None:  # a local cell's record keeps the shape records always had
            del free["placement"]
        return {**head, **body, **free}

    @classmethod
    def from_dict(cls, data: Any) -> Record:
        """Parse a record of a readable schema; ``RecordError`` when it is not one."""
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMAS:
            raise RecordError(f"schema_version {version!r} is not supported (expected one of "
                              f"{', '.join(map(str, READABLE_SCHEMAS))})")
        missing = [n for n in ("run_id", "status", "model", "runtime", "params") if n not in data]
        if missing:
            raise RecordError(f"missing keys: {', '.join(missing)}")
        if not all(isinstance(data.get(k), dict) for k in ("model", "runtime", "params")):
            raise RecordError("model, runtime and params must be JSON objects")
        model = dict(data["model"])
        if "onnx_sha256" in model:  # schema 1 name
            model["sha256"] = model.pop("onnx_sha256")
        values: dict[str, Any] = {name: section.from_dict(model if name == "model" else data.get(name))
                                  for name, section in _SECTIONS.items()}
        values.update({name: data.get(name) for name in _FREE if name in data})
        for name in ("record_id", "timestamp_utc"):
            if data.get(name):
                values[name] = data[name]
        return cls(run_id=data["run_id"], status=data["status"], schema_version=version, **values)

    @property
    def contention(self) -> list[str]:
        """Why the cell counts as measured under contention (``machine.contention``); empty when it does not
        or when the record predates load awareness."""
        machine = self.machine if isinstance(self.machine, dict) else {}
        reasons = machine.get("contention") or []
        reasons = [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]
        if machine.get("contended") and not reasons:
            reasons = ["flagged as contended"]
        return reasons if machine.get("contended") is not False else []

    @property
    def contended(self) -> bool:
        return bool(self.contention)

    @property
    def target(self) -> str | None:
        """The cluster target the cell was placed on (bench.yaml ``targets:``); None: any machine."""
        target = (self.placement if isinstance(self.placement, dict) else {}).get("target")
        return None if target is None else str(target)

    @property
    def sweep_key(self) -> tuple:
        """A sweep's cell: the cell on a target (a cell measured on two kinds of machine is two sweep cells)."""
        return self.cell_key, self.target

    @property
    def cell_key(self) -> tuple:
        return cell_key(self.model.name, self.model.opset, self.params.batch, self.runtime.name,
                        self.runtime.precision, self.model.weights_requested, self.params.scenario,
                        self.params.requests, self.params.threads)


def cell_key(model: str | None, opset: int | None, batch: int | None, runtime: str | None,
             precision: str | None, weights: str | None, scenario: str | None = None,
             requests: int | None = None, threads: int | None = None) -> tuple:
    """The identity of a sweep cell; the one definition requests and records share. The scenario is part of
    it (no scenario: latency, as every record before the throughput scenario), and so are the requests in
    flight asked of a throughput cell, so a concurrency sweep keeps one cell per count, and the threads asked
    (None: the runtime's default), so a search over thread counts (``bench tune``) keeps one cell per count."""
    scenario = scenario or "latency"
    return (model, opset, batch, runtime, precision, scenario, requests if scenario == "throughput" else None,
            threads, weights)


def _finite_json(value: Any) -> Any:
    """NaN/inf are not JSON; store them as null rather than writing an unreadable line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


def append_record(path: Path, record: Record) -> None:
    """Append one record as one line (atomically; see ``core.files.append_line``)."""
    record.check()
    line = json.dumps(_finite_json(record.to_dict()), allow_nan=False, default=str, separators=(",", ":"))
    append_line(Path(path), line)


# --- reading ---------------------------------------------------------------------------------------------

@dataclass
class LoadedRecord:
    """One record as read, and where from. ``invalid``: which invariant it breaks, if any."""

    record: Record
    source: str  # "path:line"
    order: int  # reading order, the tie-breaker between equal timestamps
    invalid: str | None = None

    @property
    def status(self) -> str:
        return "invalid" if self.invalid else self.record.status


@dataclass
class ReadResult:
    records: list[LoadedRecord]
    problems: list[str]  # "path:line: what is wrong"
    files: list[tuple[Path, int]]  # (file, records read)

    def valid(self) -> list[Record]:
        return [r.record for r in self.records if r.invalid is None]


def read_records(paths: Path | Iterable[Path], missing_ok: bool = True) -> ReadResult:
    """Read every record of ``paths``. Lines that are not records are listed in ``problems`` (and logged);
    records that parse but break an invariant are kept, marked ``invalid``. A missing file reads as empty
    when ``missing_ok``, else raises ``FileNotFoundError``."""
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    result = ReadResult([], [], [])
    for path in paths:
        if not path.exists():
            if missing_ok:
                continue
            raise FileNotFoundError(f"{path}: no such results file")
        found = 0
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    record = Record.from_dict(json.loads(raw.decode("utf-8")))
                except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, RecordError
                    result.problems.append(f"{path}:{number}: {type(exc).__name__}: {exc}")
                    continue
                invalid = None
                try:
                    record.check()
                except RecordError as exc:
                    invalid = str(exc)
                result.records.append(LoadedRecord(record, f"{path}:{number}", len(result.records), invalid))
                found += 1
        result.files.append((path, found))
    for problem in result.problems:
        log.warning("skipped unreadable line %s", problem)
    return result
