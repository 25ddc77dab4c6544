"""``python -m bench _side_by_side JSON``: several of ``bench tune``'s cells measured side by side in one process
(``bench.harness.side_by_side``): the candidates of one runtime at a screening rung, or the finalists. Each still
gets its measurement settings, its drift pass (when it has one) on the instance that was timed, and an ordinary
record. Sequential cells would be minutes apart on a machine that drifts by more than a cell's CV in minutes; a
choice between near-equals needs them measured in the same minutes. Cells of the throughput scenario keep their
requests in flight and cannot take turns: they are measured one after the other, each as ``python -m bench _cell``
runs it.

One machine watch spans the turns: every record carries the same machine section (contention while any of them
was timed counts for all). A cell that fails gets its error record; the others go on. What the process leaves
unrecorded (a crash, a timeout) the tune measures again cell by cell (``bench.tune.runner``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.cell import EXIT_OK, Draft, OpenCell, close_cell, drift_of, note_runtime, open_cell, run_cell
from bench.harness.machine import MachineWatch
from bench.harness.side_by_side import Contestant, measure_side_by_side, measurement_of
from bench.records import Record, append_record
from bench.request import BenchRequest, validate
from core.proc import exit_code_of
from core.progress import say

log = logging.getLogger(__name__)


def side_by_side(requests: list[BenchRequest]) -> list[Record]:
    """A record per request, in order: measured side by side, or the error that stopped it."""
    watch = MachineWatch()
    records: dict[int, Record] = {}
    opened: list[tuple[int, OpenCell]] = []
    for i, request in enumerate(requests):
        draft = Draft(request)
        try:
            request, runtime_cls = validate(request)
            draft = Draft(request)
            opened.append((i, open_cell(request, runtime_cls, draft)))
        except Exception as exc:  # usage errors and failures alike: this finalist's error record
            records[i] = draft.record("error", error=exc)
    params = requests[0].measure
    contestants = [Contestant(cell.runtime, cell.artifact, cell.request.runtime.batch) for _, cell in opened]
    say(f"measuring {len(contestants)} configuration(s) side by side: " + "; ".join(c.label for _, c in opened))
    try:
        watch.begin()
        try:
            measure_side_by_side(contestants, params)
        finally:
            watch.end()
        for (i, cell), contestant in zip(opened, contestants, strict=True):
            note_runtime(cell)
            if contestant.error is not None:
                records[i] = cell.draft.record("error", error=contestant.error)
                continue
            try:
                drift_of(cell)
            except Exception as exc:
                log.debug("drift pass failed", exc_info=True)
                records[i] = cell.draft.record("error", error=exc)
    finally:
        for _, cell in opened:
            cell.runtime.close()
    machine = watch.section()
    for (i, cell), contestant in zip(opened, contestants, strict=True):
        if i not in records:
            close_cell(cell, machine)
            timing = measurement_of(contestant, params, len(opened) - 1).timing_dict()
            records[i] = cell.draft.record("ok", timing=timing)
    return [records[i] for i in range(len(requests))]


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    requests = [BenchRequest.from_dict(data) for data in json.loads(argv[0])]
    try:
        if any(r.runtime.scenario != "latency" for r in requests):
            for request in requests:  # no turns to take: one after the other
                append_record(Path(request.output.results), run_cell(request).record)
            return EXIT_OK
        records = side_by_side(requests)
    except KeyboardInterrupt as exc:
        return exit_code_of(exc)  # what has no record yet the tune measures again
    for request, record in zip(requests, records, strict=True):
        append_record(Path(request.output.results), record)
    return EXIT_OK
