"""``bench tune``'s rungs, run the sweep's way: each measurement is a cell in its own process
(``bench.sweep.runner.run_cell_process``) appending an ordinary record to the results file, exports made
first (``export_missing``), the file locked against a sweep or another tune (``SweepLock``).

Rung ``r`` measures every candidate still standing for ``screen_s * eta**r`` seconds without a drift pass,
under the run id ``<tune id>-screen<r>``; ``bench.tune.search.prune`` decides who goes on. Cells minutes apart on
a machine that drifts would be compared, so the cells of one runtime are measured side by side in one process
(``python -m bench _side_by_side``: loaded together, timed in turns; one after the other in the throughput
scenario), each still with its own runtime instance and record; what such a process leaves unrecorded (a crash,
a timeout) is measured again cell by cell, each in its own process. A rung after the first is skipped when
measuring in full the most it could drop costs less than the rung (then they all go to the final). The finalists
get the full measurement of bench.yaml's ``measure`` section and the drift pass, under ``<tune id>-final``, side by
side in one process too (a throughput-scenario final: a process per cell). Every decision is computed from the
records, so rerunning the same command resumes: a candidate with a record under a rung's run id is not measured
again there.

The time budget counts this invocation's wall time, exports included. A further screening rung starts only
when it and the final fit in what is left (estimated from the cells run so far); once the budget is spent no
new cell starts, and the recommendation is made from what was measured.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bench.budgets import Budgets
from bench.cell import EXIT_INTERRUPTED
from bench.harness.measure import MeasureParams
from bench.records import read_records
from bench.report.judge import screening_run_id
from bench.report.results import select_cells
from bench.request import BenchRequest
from bench.sweep.runner import export_missing, finished_statuses, run_cell_process
from bench.tune.search import Entry, halve, prune
from bench.tune.space import Candidate, Setting, request_for
from core.proc import python_module, run_child

log = logging.getLogger(__name__)

DEFAULT_CELL_OVERHEAD_S = 5.0  # process start, imports, model load: until a cell has been timed here


# Runtimes whose thread count is a setting of the process, not of the loaded model: Paddle Inference sets its math
# library's threads (OpenMP, oneDNN) for the whole process, so its configurations of different thread counts are
# never measured side by side.
PROCESS_WIDE_THREADS = frozenset({"paddle"})


def side_by_side_group(request: BenchRequest, together: str | None) -> object:
    """The group ``request`` is measured in: the same key, the same process."""
    if together is None:
        return id(request)
    key = ("all",) if together == "all" else (request.runtime_name, request.runtime.device)
    if request.runtime_name in PROCESS_WIDE_THREADS:
        key += (request.runtime_name, request.runtime.threads)
    return key


class BudgetSpent(Exception):
    """The time budget ran out before the next cell."""


@dataclass
class Clock:
    """The time budget of one invocation, and what the cells run so far say a cell costs."""

    budget_s: float | None
    start: float = field(default_factory=time.monotonic)
    overheads: list[float] = field(default_factory=list)  # each cell's wall time beyond its timed loop

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def check(self) -> None:
        if self.budget_s is not None and self.elapsed >= self.budget_s:
            raise BudgetSpent

    @property
    def overhead_s(self) -> float:
        return sum(self.overheads) / len(self.overheads) if self.overheads else DEFAULT_CELL_OVERHEAD_S

    def cell_s(self, measure: MeasureParams) -> float:
        return self.overhead_s + measure.min_duration_s

    def fits(self, seconds: float) -> bool:
        return self.budget_s is None or self.elapsed + seconds <= self.budget_s


@dataclass(frozen=True)
class Search:
    """How the screening goes (README: bench tune)."""

    budgets: Budgets
    screen_s: float = 0.3  # the first rung's timed seconds
    eta: int = 3  # each rung measures eta times longer and keeps about 1/eta
    rungs: int = 3
    finalists: int = 3
    min_noise: float = 0.03
    retry_contended: bool = False  # measure again what a run of this tune measured under contention


class TuneRun:
    """One invocation of a tune: its cells, its printed log, its clock."""

    def __init__(self, tune_id: str, setting: Setting, search: Search, clock: Clock, lock_fd: int | None,
                 say: Callable[[str], None] = print) -> None:
        self.tune_id, self.setting, self.search, self.clock = tune_id, setting, search, clock
        self.keep = (lock_fd,) if lock_fd is not None else ()
        self.say = say
        self.results = Path(setting.results)
        self.cells_run = 0

    def screening_measure(self, rung: int) -> MeasureParams:
        m = self.setting.config.measure
        seconds = self.search.screen_s * self.search.eta ** rung
        return MeasureParams(warmup=min(m.warmup, 3), iterations=min(m.iterations, 10 * self.search.eta ** rung),
                             min_duration_s=seconds, max_duration_s=max(2.0, 4 * seconds), scope=m.scope, seed=m.seed)

    def final_measure(self) -> MeasureParams:
        m = self.setting.config.measure
        return MeasureParams(m.warmup, m.iterations, m.min_duration_s, m.max_duration_s, m.scope, m.seed)

    def run(self, candidates: Sequence[Candidate]) -> list[BenchRequest]:
        """Screen, then measure the finalists in full; returns the finalists' requests. ``BudgetSpent`` when the
        time budget ran out first."""
        first = self.screening_measure(0)
        standing = [request_for(c, self.setting, first, screening_run_id(self.tune_id, 0), drift=False)
                    for c in candidates]
        export_missing(self._todo(standing), self.setting.config, self.results, self.keep)
        entries = [Entry(r, None) for r in standing]
        final_count = self.search.finalists
        for rung in range(self.search.rungs):
            measure = self.screening_measure(rung)
            if rung and not self._rung_fits(len(standing), measure):
                self.say(f"rung {rung}: skipped, it and the final would not fit in the time budget")
                break
            if rung and self._final_is_cheaper(len(standing), measure):
                final_count = len(standing)
                self.say(f"rung {rung}: skipped, measuring the {len(standing) - self.search.finalists} it could "
                         f"drop in full costs less than screening all {len(standing)} again")
                break
            entries = self._screen(rung, standing, measure)
            standing = [e.request for e in entries]
            if len(standing) <= self.search.finalists:
                break
        finalists = [e.request for e in halve(entries, self.search.budgets, final_count, contended_go_on=False)]
        self.say(f"final: {len(finalists)} finalist(s), full measurement (bench.yaml measure)"
                 + (" and drift pass" if self.setting.drift else ", no drift pass (bench.yaml sweep.drift: false)"))
        final = self._final(finalists, f"{self.tune_id}-final")
        again = [e.request for e in self.entries(final, f"{self.tune_id}-final") if e.contended]
        if again:  # the report and recommend use a configuration's latest quiet record: one more try
            self.say(f"final: {len(again)} finalist(s) measured under contention, measured once more")
            self._final(again, f"{self.tune_id}-final2")
        return final

    def _final(self, requests: Sequence[BenchRequest], run_id: str) -> list[BenchRequest]:
        final = [dataclasses.replace(r, measure=self.final_measure(), drift=self.setting.drift,
                                     output=dataclasses.replace(r.output, run_id=run_id)) for r in requests]
        # side by side (bench.tune.together) unless requests are kept in flight (throughput scenario): no turns to take
        turns = len(final) > 1 and self.setting.scenario == "latency"
        self._measure(final, "final", together="all" if turns else None)
        return final

    def _rung_fits(self, count: int, measure: MeasureParams) -> bool:
        """Whether a rung of ``count`` cells and then the final fit in the time left (a final cell: its full
        measurement, and about one more load's time for the drift pass)."""
        final = self.search.finalists * (self.clock.cell_s(self.final_measure()) + self.clock.overhead_s)
        return self.clock.fits(count * self.clock.cell_s(measure) + final)

    def _final_is_cheaper(self, count: int, measure: MeasureParams) -> bool:
        """Whether a rung over ``count`` candidates costs more than measuring in full the most it could drop
        (down to ``finalists``): then they all go to the final, which decides on better figures for less."""
        final_cell = self.clock.cell_s(self.final_measure()) + self.clock.overhead_s
        return (count - self.search.finalists) * final_cell < count * self.clock.cell_s(measure)

    def _screen(self, rung: int, standing: list[BenchRequest], measure: MeasureParams) -> list[Entry]:
        run_id = screening_run_id(self.tune_id, rung)
        requests = [dataclasses.replace(r, measure=measure, output=dataclasses.replace(r.output, run_id=run_id))
                    for r in standing]
        self._measure(requests, f"rung {rung}", together="runtime")
        entries = self.entries(requests, run_id)
        verdict = prune(entries, self.search.budgets, self.search.min_noise, self.search.finalists, self.search.eta)
        self.say(f"rung {rung} ({measure.min_duration_s:g} s each): {len(entries)} measured, "
                 f"{len(verdict.dropped)} dropped, {len(verdict.survivors)} go on")
        for entry, why in verdict.dropped:
            self.say(f"  dropped {entry.label}: {why}")
        return verdict.survivors

    def entries(self, requests: Sequence[BenchRequest], run_id: str) -> list[Entry]:
        """Each request with the cell of its records under ``run_id`` (None: none yet)."""
        loaded = [r for r in read_records(self.results).records if r.record.run_id == run_id]
        cells = {c.record.cell_key: c for c in select_cells(loaded)}
        return [Entry(r, cells.get(r.cell_key)) for r in requests]

    def _todo(self, requests: Sequence[BenchRequest]) -> list[BenchRequest]:
        """The requests without a record under their run id yet (a resumed tune measures only those), and with
        ``retry_contended`` those whose only records there were measured under contention."""
        done = finished_statuses(self.results, requests[0].output.run_id) if requests else {}
        finished = {"ok", "error"} | (set() if self.search.retry_contended else {"contended"})
        return [r for r in requests if not done.get(r.sweep_key, set()) & finished]

    def _measure(self, requests: Sequence[BenchRequest], name: str, together: str | None = None) -> None:
        """Measure the requests without a record yet: each in its own process, or side by side in one process
        (``bench.tune.together``), those of one runtime (``together="runtime"``, the screening) or all of them
        (``"all"``, the final)."""
        todo = self._todo(requests)
        groups: dict[object, list[BenchRequest]] = {}
        for request in todo:
            groups.setdefault(side_by_side_group(request, together), []).append(request)
        with tqdm(total=len(requests), initial=len(requests) - len(todo), desc=name, unit="cell", file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for group in groups.values():
                self.clock.check()
                bar.set_postfix_str(group[0].label + (f" and {len(group) - 1} more" if len(group) > 1 else ""))
                started = time.monotonic()
                self._run_group(group, bar, together)
                each = (time.monotonic() - started) / len(group)
                self.clock.overheads += [each - group[0].measure.min_duration_s] * len(group)
                self.cells_run += len(group)
                bar.update(len(group))

    def _run_group(self, group: list[BenchRequest], bar: tqdm, together: str | None) -> None:
        timeout = self.setting.config.sweep.cell_timeout_s
        if len(group) > 1 and together:
            child = run_child(python_module("bench", "_side_by_side", json.dumps([r.to_dict() for r in group])),
                              timeout * len(group), capture_stdout=False, pass_fds=self.keep)
            if child.returncode in (EXIT_INTERRUPTED, -signal.SIGINT):
                raise KeyboardInterrupt
        for request in self._todo(group):  # what the shared process left unrecorded: each in its own
            run_cell_process(request, self.results, timeout, bar, self.keep)
