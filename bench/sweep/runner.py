"""``python -m bench sweep``: run the bench.yaml matrix, one subprocess per cell, resumably.

Cells are models x opsets x runtimes x precisions x batches (plus ``sweep.manifests`` x runtimes x ...).
Each runs as ``python -m bench _cell JSON`` so a crash, leak or abort in one engine cannot poison the next
cell's numbers or end the sweep; the cell appends its own record. A cell that dies without one (SIGABRT,
OOM kill, timeout) gets an error record from this parent. Exports run first, once per (model, opset), also in
a subprocess because paddle2onnx can abort the process.

Resuming: the sweep is identified by ``run_id`` (a hash of the measurement settings unless ``--run-id`` is
given). A cell that already has an ok or error record under that run_id is skipped; ``--retry-errors`` reruns
the error ones, ``--retry-contended`` the ones measured only under contention (``bench.harness.machine``).
Records are appended as each cell finishes, so Ctrl-C or SIGTERM loses only the cell in flight (stopped, no
record); the cells die with the sweep even when it is killed (SIGKILL). A lock on the results file
(``bench.sweep.lock``) keeps a second sweep or a resume from running beside a live one or its stopping
cells, so no cell is ever recorded twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bench.accuracy.drift_pass import EXPORT_IMAGES
from bench.cell import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    export_spec,
    lost_cell_record,
    skeleton_record,
)
from bench.config import BenchConfig, ConfigError, load_config
from bench.launcher import ExportFailed, launch_export
from bench.records import append_record, read_records
from bench.request import BenchRequest
from bench.sweep.lock import SweepBusy, SweepLock
from bench.sweep.plan import plan, sweep_id
from bench.table import format_table
from core import progress
from core.files import check_appendable
from core.manifest import ManifestError, load_manifest, manifest_path_of
from core.proc import Terminated, describe_exit, exit_code_of, python_module, run_child

log = logging.getLogger(__name__)


def finished_statuses(results: Path, run_id: str) -> dict[tuple, set[str]]:
    """(cell key, target) -> statuses recorded under ``run_id``."""
    done: dict[tuple, set[str]] = {}
    for record in read_records(results).valid():
        if record.run_id == run_id:
            status = "contended" if record.status == "ok" and record.contended else record.status
            done.setdefault(record.sweep_key, set()).add(status)
    return done


def probe_runtimes(names: Iterable[str]) -> dict[str, tuple[bool, str]]:
    """Availability per runtime, probed in a subprocess so the sweep never imports an engine."""
    names = list(names)
    if not names:
        return {}
    child = run_child(python_module("bench", "list", "--json", *names), timeout=300)
    try:
        if child.returncode != 0 or child.timed_out:
            raise ValueError(f"bench list ended with {describe_exit(child.returncode)}: {child.error_line}")
        found = {a["name"]: (a["available"], a["reason"]) for a in json.loads(child.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError, KeyError) as exc:
        log.warning("could not probe runtimes (%s); every cell will try its runtime", exc)
        found = {}
    return {name: found.get(name, (True, "")) for name in names}


def _record_written(results: Path, offset: int, record_id: str) -> bool:
    """Did a record with ``record_id`` land in ``results`` after byte ``offset``?"""
    try:
        with results.open("rb") as f:
            f.seek(offset)
            return any(record_id.encode() in line for line in f)
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=Path("bench.yaml"), help="the sweep (default bench.yaml)")
    p.add_argument("--results", type=Path, help="JSON-lines file (default: bench.yaml results)")
    p.add_argument("--retry-errors", action="store_true", help="rerun cells whose record is an error")
    p.add_argument("--retry-contended", action="store_true",
                   help="rerun cells measured only while other processes were busy (machine.contended)")
    p.add_argument("--run-id", help="sweep identity (default: hash of the measurement settings)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and whether they are done")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the cells on the nodes of a Ray cluster: auto, ray://HOST:PORT or HOST:PORT (default: "
                        "bench.yaml cluster:; local: on this machine)")
    p.add_argument("--wide", action="store_true", help="the summary table with every column, notes inline")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (shown only on a terminal anyway); errors and the summary still print")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress.set_quiet(args.quiet)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_inputs(cfg, args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = args.results or cfg.results
    try:
        check_appendable(results)
    except OSError as exc:
        print(f"error: results file {results} is not writable ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_FAILED
    run_id = args.run_id or sweep_id(cfg)
    cells = plan(cfg, run_id, results)
    try:
        cluster = _cluster(args, cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    lock = SweepLock(results, " ".join(["python -m bench sweep", *(sys.argv[2:] if argv is None else argv)]))
    try:
        if not args.dry_run:
            lock.acquire()
        with logging_redirect_tqdm():
            _run_sweep(cells, cfg, results, run_id, args, lock.fd, cluster)
    except SweepBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        how = str(exc) if isinstance(exc, Terminated) else "interrupted"
        print(f"\n{how}: the cell in flight was stopped and not recorded; finished cells are in {results}; "
              "rerun the same command to resume", file=sys.stderr)
        return exit_code_of(exc)
    finally:
        lock.release()
        if cluster is not None:
            cluster.close()
    return _summarise(cells, results, run_id, args.wide)


def check_inputs(cfg: BenchConfig, config: Path) -> None:
    """Files the config names that are not there (drift data, labels, a weights file) or are no manifest fail
    the sweep now, as a usage error, not each cell in turn."""
    from export.weights import WeightsError, check_source

    for key, value in (("sweep.drift.data", cfg.sweep.drift_data), ("sweep.drift.labels", cfg.sweep.drift_labels)):
        if value not in (None, EXPORT_IMAGES, "synthetic") and not Path(value).expanduser().exists():
            raise ConfigError(f"{config.name}: {key}: {value} not found")
    if cfg.sweep.models:
        try:
            check_source(cfg.export.weights)
        except WeightsError as exc:
            raise ConfigError(f"{config.name}: export.weights: {exc}") from None
    for i, path in enumerate(cfg.sweep.manifests):
        try:
            load_manifest(manifest_path_of(Path(path)))
        except ManifestError as exc:
            raise ConfigError(f"{config.name}: sweep.manifests[{i}]: {exc}") from None


def _cluster(args, cfg: BenchConfig):
    """The Ray cluster the cells run on (``--cluster`` or bench.yaml ``cluster:``), connected; None: here."""
    address = args.cluster or cfg.cluster
    if address in (None, "local"):
        if cfg.sweep.targets:
            raise ConfigError("sweep.targets place cells on the nodes of a cluster: pass --cluster ADDRESS (or set "
                              "cluster: in bench.yaml)")
        return None
    if args.dry_run:
        return None
    from bench.cluster.connect import connect

    return connect(address, [cfg.targets[name] for name in cfg.sweep.targets])


def _run_sweep(cells: list[BenchRequest], cfg: BenchConfig, results: Path, run_id: str, args,
               lock_fd: int | None, cluster=None) -> None:
    keep = (lock_fd,) if lock_fd is not None else ()  # every child holds the lock as long as it lives
    done = finished_statuses(results, run_id)  # read under the lock: no other sweep is adding to it
    finished = {"ok"} | ({"error"} if not args.retry_errors else set())
    finished |= set() if args.retry_contended else {"contended"}
    todo = [c for c in cells if not (done.get(c.sweep_key, set()) & finished)]
    print(f"sweep {run_id}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run; "
          f"results: {results}", file=sys.stderr)
    if args.dry_run:
        for cell in cells:
            state = "todo" if cell in todo else "done"
            print(f"{state}  {cell.label}")
        return
    if cluster is None:  # on a cluster each node's cell probes its own runtime
        todo = _skip_unavailable(todo, results, done)
    todo = export_missing(todo, cfg, results, keep)
    if cluster is not None:
        from bench.cluster.dispatch import run_on_cluster

        run_on_cluster(cluster, todo, len(cells), cfg.targets, results, cfg.sweep.cell_timeout_s)
        return
    with progress.bar(total=len(cells), initial=len(cells) - len(todo), desc="sweep", unit="cell") as bar:
        for cell in todo:
            bar.set_postfix_str(cell.label)
            run_cell_process(cell, results, cfg.sweep.cell_timeout_s, bar, keep)
            bar.update(1)


def _skip_unavailable(todo: list[BenchRequest], results: Path, done: dict) -> list[BenchRequest]:
    available = probe_runtimes(sorted({c.runtime_name for c in todo}))
    keep = []
    for cell in todo:
        ok, reason = available[cell.runtime_name]
        if ok:
            keep.append(cell)
        elif "skipped" not in done.get(cell.sweep_key, set()):
            append_record(results, skeleton_record(cell, "skipped", "RuntimeUnavailable", reason))
    if len(keep) < len(todo):
        missing = sorted({c.runtime_name for c in todo} - {c.runtime_name for c in keep})
        print(f"skipping runtimes not available here: {', '.join(missing)}", file=sys.stderr)
    return keep


def export_missing(todo: list[BenchRequest], cfg: BenchConfig, results: Path,
                   keep: tuple[int, ...]) -> list[BenchRequest]:
    """Export each missing (model, opset, batch) once, and each missing int8/fp16 model of a sweep.manifests export;
    cells of a failed export get error records (also the way ``bench tune`` makes its candidates' exports)."""
    groups: dict = {}
    for cell in todo:
        spec = export_spec(cell)  # None: a --manifest cell that runs the manifest's own model
        if spec is not None:
            groups.setdefault(spec, []).append(cell)
    failed: set[int] = set()
    # a derived model older than its fp32 export is missing too; reading each export's hash takes a moment
    missing = [spec for spec in progress.bar(groups, desc="checking exports", unit="export", leave=False)
               if not spec.ready()]
    for spec in progress.bar(missing, desc="export", unit="model"):
        try:
            launch_export(spec, cfg.sweep.cell_timeout_s, pass_fds=keep)
        except ExportFailed as exc:
            tqdm.write(f"error: {exc}", file=sys.stderr)
            for cell in groups[spec]:
                append_record(results, skeleton_record(cell, "error", "ExportFailed", str(exc)))
                failed.add(id(cell))
    return [c for c in todo if id(c) not in failed]


def run_cell_process(cell: BenchRequest, results: Path, timeout: float, bar: tqdm, keep: tuple[int, ...]) -> None:
    """Run one cell in its own process (``python -m bench _cell``); a cell that dies without a record gets an
    error record here (also how ``bench tune`` runs each of its measurements)."""
    request = dataclasses.replace(cell, output=dataclasses.replace(cell.output, record_id=uuid.uuid4().hex))
    offset = _size(results)
    child = run_child(python_module("bench", "_cell", json.dumps(request.to_dict())), timeout,
                      capture_stdout=False, pass_fds=keep)
    if child.returncode == EXIT_INTERRUPTED or child.returncode == -signal.SIGINT:
        raise KeyboardInterrupt
    if _record_written(results, offset, request.output.record_id):
        if child.returncode != EXIT_OK:
            bar.write(f"error: {cell.label}: {child.error_line}", file=sys.stderr)
        return
    record = lost_cell_record(request, child, timeout)
    bar.write(f"error: {cell.label}: {record.error.message}", file=sys.stderr)
    append_record(results, record)


def _summarise(cells: list[BenchRequest], results: Path, run_id: str, wide: bool = False) -> int:
    latest = {}
    for record in read_records(results).valid():
        if record.run_id == run_id:
            latest[record.sweep_key] = record
    rows = [latest[k] for k in dict.fromkeys(c.sweep_key for c in cells) if k in latest]
    for target in dict.fromkeys(r.target for r in rows):  # a table per target: no row beside another machine's
        if target:
            print(f"\ntarget {target}:")
        print(format_table([r for r in rows if r.target == target], wide=wide))
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "error", "skipped")}
    print(f"\n{counts['ok']} ok, {counts['error']} error, {counts['skipped']} skipped, "
          f"{len(cells) - len(rows)} not run; run_id {run_id}; results {results}")
    return EXIT_FAILED if counts["error"] else EXIT_OK
