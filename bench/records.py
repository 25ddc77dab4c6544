"""Result records: one JSON object per line, versioned, appended atomically.

A record is written for every run, successful or not, so a sweep's table always has every cell.
Schema (``schema_version`` 1)::

    schema_version, record_id, run_id, timestamp_utc, status ("ok" | "error" | "skipped"),
    error {type, message} | null,
    model {name, opset, opset_written, batch, onnx_sha256, manifest, weights},
    runtime {name, versions, device, precision, options_asked, effective, notes},
    params {batch, warmup, iterations, min_duration_s, max_duration_s, scope, threads, seed},
    timing {scope, load_s, first_run_ms, latency_ms {...}, device_latency_ms {...} | null, throughput_ips,
            wall_s, stopped_by} | null,
    drift | null, gates | null, environment {...}, git {commit, dirty}

Numbers are numbers (never formatted strings) and units live in the field names.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("ok", "error", "skipped")
DEFAULT_RESULTS = Path("results/runs.jsonl")


class RecordError(ValueError):
    """A line or dict that is not a valid record."""


def new_run_id() -> str:
    """Sortable and unique enough: UTC time plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Record:
    """One benchmark cell: what was asked, what ran, how fast, and where."""

    run_id: str
    status: str
    model: dict[str, Any]
    runtime: dict[str, Any]
    params: dict[str, Any]
    timing: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    drift: dict[str, Any] | None = None  # filled by the drift stage
    gates: dict[str, Any] | None = None  # filled by the drift stage
    environment: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp_utc: str = field(default_factory=_utc_now)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status != "ok" and not self.error:
            raise RecordError(f"a record with status {self.status!r} needs an error {{type, message}}")
        if self.status == "ok" and self.timing is None:
            raise RecordError("a record with status 'ok' needs timing")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Field order on disk: identity first, then the payload.
        head = ("schema_version", "record_id", "run_id", "timestamp_utc", "status", "error")
        return {**{k: data[k] for k in head}, **{k: v for k, v in data.items() if k not in head}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordError(f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("run_id", "status", "model", "runtime", "params") if n not in data]
        if missing:
            raise RecordError(f"missing keys: {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def cell_key(self) -> tuple:
        return cell_key(self.to_dict())


def cell_key(record: dict[str, Any]) -> tuple:
    """The identity of a sweep cell: (model, opset, batch, runtime, precision, weights)."""
    model, runtime, params = record["model"], record["runtime"], record["params"]
    weights = (model.get("weights") or {}).get("requested")
    return (model.get("name"), model.get("opset"), params.get("batch"), runtime.get("name"),
            runtime.get("precision"), weights)


def _finite(value: Any) -> Any:
    """NaN/inf are not JSON; store them as null rather than writing an unreadable line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def append_record(path: Path, record: Record | dict[str, Any]) -> None:
    """Append one record as one line.

    The whole line goes out in a single ``os.write`` on an ``O_APPEND`` descriptor, so concurrent writers
    (sweep parent and cells) never interleave, and an interrupted run leaves whole lines only.
    """
    data = record.to_dict() if isinstance(record, Record) else record
    line = json.dumps(_finite(data), allow_nan=False, default=str, separators=(",", ":")) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read access for the newline check
    try:
        payload = line.encode("utf-8")
        if _ends_without_newline(fd):
            # A writer killed mid-line (e.g. disk full) must not glue our record onto its fragment.
            payload = b"\n" + payload
        written = os.write(fd, payload)
        if written != len(payload):
            raise OSError(f"short write to {path}: {written} of {len(payload)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_without_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def check_writable(path: Path) -> None:
    """Raise ``OSError`` now if ``path`` cannot be appended to, before any time is spent measuring."""
    path = Path(path)
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.close(fd)
    if not existed:  # leave no empty file behind if nothing is ever appended
        path.unlink()


@dataclass
class ReadResult:
    records: list[Record]
    problems: list[tuple[int, str]]  # (line number, what is wrong)


def read_records(path: Path) -> ReadResult:
    """Read every valid record; corrupt lines are reported (and logged), never fatal."""
    path = Path(path)
    records: list[Record] = []
    problems: list[tuple[int, str]] = []
    if not path.exists():
        return ReadResult(records, problems)
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            text = raw.strip()
            if not text:
                continue
            try:
                records.append(Record.from_dict(json.loads(text)))
            except (ValueError, TypeError) as exc:  # JSONDecodeError and RecordError are ValueErrors
                problems.append((number, f"{type(exc).__name__}: {exc}"))
    for number, message in problems:
        log.warning("%s:%d: skipped unreadable record (%s)", path, number, message)
    return ReadResult(records, problems)
