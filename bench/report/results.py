"""The results model shared by ``bench report`` and ``bench compare``: records read with the one reader
(``bench.records.read_records``), grouped into cells, ordered, and the figures a report plots read off them (the
accuracy axis: ``bench.report.accuracy_axis``).

A cell is (model, opset, batch, runtime, precision, scenario, requests and threads asked, weights, scope, host,
target: the kind of cluster node a sweep across hosts placed it on, ``bench.targets``). When a
cell was run more than once, the latest ``ok`` record measured without contention is used (else the latest
``ok`` one, else the latest record of any status); the errors before it are superseded, counted, not listed.
A failed attempt that never reached a model (a weights file or manifest that was not there, recorded before
such input was refused up front) belongs to the cell of the same configuration that later ran ok.

Drift and gates stay the dicts the runs recorded; ``Drift`` and ``Gates`` (``bench.report.drift``) are the typed
reads of them.

Nothing here formats text or draws: that is ``bench.report.markdown``, ``sections``, ``figures``, ``plots``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.records import LoadedRecord, ReadResult, Record, finite, read_records
from bench.report.drift import Drift, Gates

Y_METRICS = ("auto", "top1", "agreement")
RUNTIME_ORDER = ("paddle", "ort", "ov", "trt")
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8")
SCENARIO_ORDER = ("latency", "throughput")


class ReportError(ValueError):
    """The results cannot be turned into a report (no file, empty file, nothing readable)."""


# --- loading ------------------------------------------------------------------------------------------------

def results_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders to their ``*.jsonl`` files; a path that does not exist is an error."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise ReportError(f"{path}: folder holds no *.jsonl results file")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise ReportError(f"{path}: no such results file")
    if not files:
        raise ReportError("no results files given")
    return files


def load_results(paths: Iterable[Path]) -> ReadResult:
    """Read records leniently (``bench.records.read_records``): a record that breaks an invariant is kept,
    marked invalid; lines that are not records at all are listed as problems.

    Raises ``ReportError`` for a missing file, an empty file, or a file with no readable record.
    """
    files = results_files(paths)
    try:
        read = read_records(files, missing_ok=False)
    except (FileNotFoundError, OSError) as exc:
        raise ReportError(str(exc)) from exc
    for path, found in read.files:
        bad = [p for p in read.problems if p.startswith(f"{path}:")]
        if not found and not bad:
            raise ReportError(f"{path}: empty results file (no records)")
        if not found:
            raise ReportError(f"{path}: no readable record in {len(bad)} non-empty line(s); first: "
                              f"{bad[0].split(': ', 1)[1][:200]}")
    return read


def _mapping(value: Any) -> dict[str, Any]:
    """A section recorded as a JSON object, else an empty one (a record's free-form parts are not checked)."""
    return value if isinstance(value, dict) else {}


# --- cells --------------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One benchmark cell: the record used, plus every record of the same cell (oldest first)."""

    used: LoadedRecord
    history: list[LoadedRecord] = field(default_factory=list)

    @property
    def record(self) -> Record:
        return self.used.record

    @property
    def status(self) -> str:
        return self.used.status

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """The run itself failed or was skipped (an invalid record may still hold some numbers)."""
        return self.status not in ("ok", "invalid")

    @property
    def model(self) -> str:
        return str(self.record.model.name)

    @property
    def opset(self) -> int | None:
        return self.record.model.opset

    @property
    def batch(self) -> int | None:
        return self.record.params.batch

    @property
    def runtime(self) -> str:
        return str(self.record.runtime.name)

    @property
    def precision(self) -> str:
        return str(self.record.runtime.precision)

    @property
    def ran(self) -> Any:
        """The precision the runtime reports it ran (None when it reported none)."""
        return _mapping(self.record.runtime.effective).get("precision")

    @property
    def scenario(self) -> str:
        """``latency`` or ``throughput`` (records from before the throughput scenario ran latency)."""
        return self.record.params.scenario_ran

    @property
    def requests(self) -> int | None:
        """Requests in flight during the timed loop: as recorded, else as asked; 1 in the latency scenario."""
        if self.scenario == "latency":
            return 1
        timing = self.record.timing
        ran = (timing.requests if timing else None) or _mapping(self.record.runtime.effective).get("requests")
        return ran or self.record.params.requests

    @property
    def scenario_label(self) -> str:
        return "latency" if self.scenario == "latency" else f"throughput x{self.requests or '?'}"

    def memory(self, key: str) -> float | None:
        """A number of the record's memory section (``peak_mib``, ``load_increase_mib``...), else None."""
        return finite(_mapping(self.record.memory).get(key))

    @property
    def harness_notes(self) -> list[str]:
        timing = self.record.timing
        return [str(n) for n in (timing.notes if timing else None) or []]

    @property
    def scope(self) -> str | None:
        timing = self.record.timing
        return (timing.scope if timing else None) or self.record.params.scope

    @property
    def host(self) -> str | None:
        return self.environment.get("host")

    @property
    def target(self) -> str | None:
        return self.record.target

    @property
    def weights(self) -> str | None:
        return _mapping(self.record.model.weights).get("requested")

    @property
    def environment(self) -> dict[str, Any]:
        return _mapping(self.record.environment)

    @property
    def git(self) -> dict[str, Any]:
        return _mapping(self.record.git)

    @property
    def drift(self) -> Drift | None:
        return Drift.of(self.record)

    @property
    def gates(self) -> Gates | None:
        return Gates.of(self.record)

    def timing_number(self, key: str) -> float | None:
        """A finite number of the timing section (``load_s``, ``throughput_ips``...), else None."""
        timing = self.record.timing
        return finite(getattr(timing, key, None)) if timing else None

    def latency_raw(self, key: str) -> Any:
        timing = self.record.timing
        return _mapping(timing.latency_ms if timing else None).get(key)

    def latency(self, key: str) -> float | None:
        """A latency figure in ms (``p50``, ``p10``, ``cv``...), else None."""
        return finite(self.latency_raw(key))

    @property
    def contention(self) -> list[str]:
        """Why this cell was measured under contention (empty: it was not, or the record cannot say)."""
        return self.record.contention if self.ok else []

    @property
    def stopped_by(self) -> str | None:
        timing = self.record.timing
        return timing.stopped_by if timing else None

    @property
    def timestamp(self) -> str:
        return timestamp_of(self.used)

    @property
    def superseded_errors(self) -> int:
        """Failed runs of this cell before the record used (a later failure is no superseded one)."""
        return sum(x.status == "error" and _chronological(x) < _chronological(self.used) for x in self.history)

    @property
    def message(self) -> str:
        if self.used.invalid:
            return f"invalid record: {self.used.invalid}"
        if self.status == "ok":
            return ""
        return error_text(self.used)

    @property
    def label(self) -> str:
        label = f"{self.model} b{self.batch} opset {self.opset} {self.runtime} {self.precision}"
        label = label if self.scenario == "latency" else f"{label} {self.scenario_label}"
        return label + (f" [{self.target}]" if self.target else "")


def timestamp_of(loaded: LoadedRecord) -> str:
    return str(loaded.record.timestamp_utc or "")


def error_text(loaded: LoadedRecord) -> str:
    error = loaded.record.error
    kind, message = (error.type, error.message) if error else (None, None)
    return f"{kind or 'Error'}: {message or '(no message)'}"


def select_cells(records: Sequence[LoadedRecord], by_host: bool = True) -> list[Cell]:
    """Group records by cell and pick the latest quiet ok one (else the latest ok, else the latest of any
    status): a measurement taken beside other busy processes never hides a quiet one."""
    groups: dict[tuple, list[LoadedRecord]] = {}
    for loaded in records:
        probe = Cell(loaded)
        key = (*loaded.record.cell_key, probe.scope, *((probe.host, probe.target) if by_host else (None, None)))
        groups.setdefault(tuple(_hashable(k) for k in key), []).append(loaded)
    cells = []
    for history in groups.values():
        history.sort(key=_chronological)
        ok = [x for x in history if x.status == "ok"]
        quiet = [x for x in ok if not x.record.contended]
        cells.append(Cell((quiet or ok or history)[-1], history))
    return sorted(_fold_failed_attempts(cells), key=cell_order)


def _chronological(loaded: LoadedRecord) -> tuple:
    return timestamp_of(loaded), loaded.order


def _configuration(c: Cell) -> tuple:
    """A cell's identity but for its weights (or manifest): what the report's labels show."""
    return c.model, c.opset, c.batch, c.runtime, c.precision, c.scenario, c.requests, c.scope, c.host


def _fold_failed_attempts(cells: list[Cell]) -> list[Cell]:
    """Cells of failed attempts that never reached a model (no model hash in any record) go into the history
    of the ok cell of the same configuration measured after them: one line per configuration in the report."""
    ok_by_configuration: dict[tuple, list[Cell]] = {}
    for c in cells:
        if c.ok:
            ok_by_configuration.setdefault(_configuration(c), []).append(c)
    kept = []
    for c in cells:
        never_ran = all(x.status != "ok" and not x.record.model.sha256 for x in c.history)
        later = [o for o in ok_by_configuration.get(_configuration(c), [])
                 if never_ran and _chronological(o.used) > _chronological(c.history[-1])]
        if later:
            into = max(later, key=lambda o: _chronological(o.used))
            into.history = sorted(into.history + c.history, key=_chronological)
        else:
            kept.append(c)
    return kept


def _hashable(value: Any) -> Hashable:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def group_cells(cells: Sequence[Cell], key: Callable[[Cell], Hashable]
                ) -> tuple[dict[Any, list[Cell]], dict[Any, list[Cell]]]:
    """Cells by ``key``, in cell order, split into groups with an ok cell (drawn) and groups without one:
    those would be empty plots (usage errors, a runtime missing here); the report lists their cells apart."""
    groups: dict[Any, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(key(cell), []).append(cell)
    drawn = {k: v for k, v in groups.items() if any(c.ok for c in v)}
    return drawn, {k: v for k, v in groups.items() if k not in drawn}


# --- order --------------------------------------------------------------------------------------------------

def family_of(model: str) -> str:
    """The zoo family of a model (LeViT, MobileViT), else the name up to its first underscore."""
    try:
        from export.models import MODELS

        if model in MODELS:
            return MODELS[model].family
    except ImportError:  # the export package is optional for reporting
        pass
    return model.split("_")[0] if "_" in model else model


def model_rank(model: str) -> tuple:
    """Zoo order (smallest model first), then by name for models outside the zoo."""
    try:
        from export.models import MODELS

        names = list(MODELS)
        return (names.index(model), model) if model in names else (len(names), model)
    except ImportError:
        return (0, model)


def rank(value: str, order: Sequence[str]) -> tuple:
    return (order.index(value), value) if value in order else (len(order), value)


def cell_order(c: Cell) -> tuple:
    return (family_of(c.model), model_rank(c.model), c.batch or 0, rank(c.runtime, RUNTIME_ORDER),
            rank(c.precision, PRECISION_ORDER), -(c.opset or 0), rank(c.scenario, SCENARIO_ORDER),
            c.requests or 0, str(c.scope), str(c.host), str(c.target))


def batch_order(c: Cell) -> tuple:
    """Within one model's batch table: runtime, precision, newest opset, scenario, then batch."""
    return (rank(c.runtime, RUNTIME_ORDER), rank(c.precision, PRECISION_ORDER), -(c.opset or 0),
            rank(c.scenario, SCENARIO_ORDER), c.requests or 0, c.batch or 0)
