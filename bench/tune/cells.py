"""``python -m bench _cells JSON``: several of ``bench tune``'s screening cells one after the other in one process,
each as ``python -m bench _cell`` runs it (its own runtime, load, machine watch and record). A screening
measurement is short: a process per cell would spend more on the interpreter's start and the runtime's import
than on the measurement. The cells of one process share a runtime; what the process leaves unrecorded (a
crash, a timeout) the tune measures again cell by cell (``bench.tune.runner``). Full measurements never share.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.cell import EXIT_OK, run_cell
from bench.harness.machine import MachineWatch
from bench.records import append_record
from bench.request import BenchRequest
from core.proc import exit_code_of


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    previous: MachineWatch | None = None
    for data in json.loads(argv[0]):
        request = BenchRequest.from_dict(data)
        # The quiet after the previous cell's timed part is this cell's before window (no second wait for it).
        watch = MachineWatch(since=previous.timed_end if previous else None)
        try:
            result = run_cell(request, watch=watch)
        except KeyboardInterrupt as exc:
            return exit_code_of(exc)  # the cell in flight has no record: the tune runs it again
        append_record(Path(request.output.results), result.record)
        previous = watch
    return EXIT_OK
