"""``python -m bench sweep``: run the bench.yaml matrix, one subprocess per cell, resumably.

Cells are models x opsets x runtimes x precisions x batches (plus ``sweep.manifests`` x runtimes x ...).
Each runs as ``python -m bench _cell JSON`` so a crash, leak or abort in one engine cannot poison the next
cell's numbers or end the sweep; the cell appends its own record. A cell that dies without one (SIGABRT,
OOM kill, timeout) gets an error record from this parent. Exports run first, once per (model, opset), also in
a subprocess because paddle2onnx can abort the process.

Resuming: the sweep is identified by ``run_id`` (a hash of the measurement settings unless ``--run-id`` is
given). A cell that already has an ok or error record under that run_id is skipped; ``--retry-errors`` reruns
the error ones. Records are appended as each cell finishes, so Ctrl-C loses only the cell in flight.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bench.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MANIFEST_NAME,
    RunRequest,
    format_table,
    last_error_line,
    skeleton_record,
)
from bench.config import BenchConfig, ConfigError, load_config
from bench.records import append_record, check_writable, read_records

log = logging.getLogger(__name__)


def sweep_id(cfg: BenchConfig) -> str:
    """Same measurement settings -> same id, so rerunning the sweep resumes it (adding cells is fine)."""
    basis = {"measure": dataclasses.asdict(cfg.measure), "export_batch": cfg.export.batch,
             "devices": cfg.sweep.devices, "drift": [cfg.sweep.drift_data, cfg.sweep.drift_labels]}
    return "sweep-" + hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:10]


def request_key(request: RunRequest) -> tuple:
    """The cell key of a request, equal to :func:`bench.records.cell_key` of the record it produces."""
    r = request
    return (r.model, r.opset, r.batch, r.runtime, r.precision, r.weights_key)


def plan(cfg: BenchConfig, run_id: str, results: Path) -> list[RunRequest]:
    """Every cell of the matrix, in a stable order (model-major, so one export serves consecutive cells)."""
    m, s = cfg.measure, cfg.sweep
    common = dict(threads=m.threads, weights=cfg.export.weights, artifacts=str(cfg.artifacts), no_export=True,
                  results=str(results), warmup=m.warmup, iterations=m.iterations,
                  min_duration_s=m.min_duration_s, max_duration_s=m.max_duration_s, scope=m.scope,
                  seed=m.seed, run_id=run_id)
    if s.drift_data is not None:
        common["drift"] = {"data": s.drift_data, "labels": s.drift_labels, "gates": cfg.gates}
    targets: list[dict] = [{"model": model, "opset": opset} for model in s.models for opset in s.opsets]
    for path in s.manifests:
        model, opset = _manifest_identity(Path(path))
        targets.append({"model": model, "opset": opset, "manifest": str(path)})
    cells = []
    for target in targets:
        for runtime in s.runtimes:
            for precision in s.precisions_for(runtime):
                for batch in s.batches:
                    export_batch = "dynamic" if cfg.export.batch == "dynamic" else batch
                    cells.append(RunRequest(runtime=runtime, precision=precision, batch=batch,
                                            device=s.devices.get(runtime), export_batch=export_batch,
                                            **target, **common))
    return cells


def _manifest_identity(path: Path) -> tuple[str, int | None]:
    """(model, opset) as the cell will record them; an unreadable manifest fails later, in its cell."""
    path = path / MANIFEST_NAME if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
        return data["model"], (data.get("opset") or {}).get("requested", data["opset"]["written"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(path), None


def finished_statuses(results: Path, run_id: str) -> dict[tuple, set[str]]:
    """cell key -> statuses recorded under ``run_id``."""
    done: dict[tuple, set[str]] = {}
    for record in read_records(results).records:
        if record.run_id == run_id:
            done.setdefault(record.cell_key, set()).add(record.status)
    return done


def probe_runtimes(names: Iterable[str]) -> dict[str, tuple[bool, str]]:
    """Availability per runtime, probed in a subprocess so the sweep never imports an engine."""
    names = list(names)
    if not names:
        return {}
    try:
        out = subprocess.run([sys.executable, "-m", "bench", "list", "--json", *names], capture_output=True,
                             text=True, timeout=300, check=True).stdout
        found = {a["name"]: (a["available"], a["reason"]) for a in json.loads(out.strip().splitlines()[-1])}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError) as exc:
        log.warning("could not probe runtimes (%s); every cell will try its runtime", exc)
        found = {}
    return {name: found.get(name, (True, "")) for name in names}


@dataclasses.dataclass
class ChildResult:
    returncode: int
    stderr_tail: str
    timed_out: bool = False


def run_child(args: list[str], timeout: float) -> ChildResult:
    """Run ``python -m bench ARGS``; on Ctrl-C stop the child and re-raise."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    timed_out = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        timed_out = True
    except KeyboardInterrupt:
        _stop(proc)
        raise
    return ChildResult(proc.returncode, last_error_line(err), timed_out)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


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
    p.add_argument("--run-id", help="sweep identity (default: hash of the measurement settings)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and whether they are done")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = args.results or cfg.results
    try:
        check_writable(results)
    except OSError as exc:
        print(f"error: results file {results} is not writable ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_FAILED
    run_id = args.run_id or sweep_id(cfg)
    cells = plan(cfg, run_id, results)
    try:
        with logging_redirect_tqdm():
            _run_sweep(cells, cfg, results, run_id, args)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cells are in {results}; rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return _summarise(cells, results, run_id)


def _run_sweep(cells: list[RunRequest], cfg: BenchConfig, results: Path, run_id: str, args) -> None:
    done = finished_statuses(results, run_id)
    finished = {"ok", "error"} if not args.retry_errors else {"ok"}
    todo = [c for c in cells if not (done.get(request_key(c), set()) & finished)]
    print(f"sweep {run_id}: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run; "
          f"results: {results}", file=sys.stderr)
    if args.dry_run:
        for cell in cells:
            state = "todo" if cell in todo else "done"
            print(f"{state}  {_label(cell)}")
        return
    todo = _skip_unavailable(todo, results, done)
    todo = _export_missing(todo, cfg, results)
    with tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep", unit="cell", file=sys.stderr,
              dynamic_ncols=True) as bar:
        for cell in todo:
            bar.set_postfix_str(_label(cell))
            _run_cell(cell, results, cfg.sweep.cell_timeout_s, bar)
            bar.update(1)


def _skip_unavailable(todo: list[RunRequest], results: Path, done: dict) -> list[RunRequest]:
    available = probe_runtimes(sorted({c.runtime for c in todo}))
    keep = []
    for cell in todo:
        ok, reason = available[cell.runtime]
        if ok:
            keep.append(cell)
        elif "skipped" not in done.get(request_key(cell), set()):
            append_record(results, skeleton_record(cell, "skipped", "RuntimeUnavailable", reason))
    if len(keep) < len(todo):
        missing = sorted({c.runtime for c in todo} - {c.runtime for c in keep})
        print(f"skipping runtimes not available here: {', '.join(missing)}", file=sys.stderr)
    return keep


def _export_missing(todo: list[RunRequest], cfg: BenchConfig, results: Path) -> list[RunRequest]:
    """Export each missing (model, opset) once; cells of a failed export get error records."""
    from export.pipeline import artifact_dir

    groups: dict[tuple, list[RunRequest]] = {}
    for cell in todo:
        if not cell.manifest:
            groups.setdefault((cell.model, cell.opset, cell.export_batch, cell.weights), []).append(cell)
    failed: set[int] = set()
    missing = [k for k in groups if not (artifact_dir(k[0], k[1], k[2], k[3], cfg.artifacts)
                                         / MANIFEST_NAME).is_file()]
    for model, opset, batch, weights in tqdm(missing, desc="export", unit="model", file=sys.stderr,
                                             disable=not missing):
        spec = {"model": model, "opset": opset, "batch": batch, "weights": weights,
                "root": str(cfg.artifacts)}
        child = run_child(["_export", json.dumps(spec)], cfg.sweep.cell_timeout_s)
        if child.returncode == 0:
            continue
        why = "timed out" if child.timed_out else describe_exit(child.returncode)
        message = f"export of {model} opset {opset} failed ({why}): {child.stderr_tail}"
        tqdm.write(f"error: {message}", file=sys.stderr)
        for cell in groups[(model, opset, batch, weights)]:
            append_record(results, skeleton_record(cell, "error", "ExportFailed", message))
            failed.add(id(cell))
    return [c for c in todo if id(c) not in failed]


def _run_cell(cell: RunRequest, results: Path, timeout: float, bar: tqdm) -> None:
    request = dataclasses.replace(cell, record_id=uuid.uuid4().hex)
    offset = _size(results)
    child = run_child(["_cell", json.dumps(request.to_dict())], timeout)
    if child.returncode == EXIT_INTERRUPTED or child.returncode == -signal.SIGINT:
        raise KeyboardInterrupt
    if _record_written(results, offset, request.record_id):
        if child.returncode != EXIT_OK:
            bar.write(f"error: {_label(cell)}: {child.stderr_tail}", file=sys.stderr)
        return
    if child.timed_out:
        kind, message = "CellTimeout", f"cell killed after {timeout:g} s (sweep.cell_timeout_s)"
    else:
        kind = "CellCrashed"
        message = f"cell process ended with {describe_exit(child.returncode)} and no record"
    if child.stderr_tail:
        message += f"; last output: {child.stderr_tail}"
    bar.write(f"error: {_label(cell)}: {message}", file=sys.stderr)
    append_record(results, skeleton_record(request, "error", kind, message))


def _label(cell: RunRequest) -> str:
    return f"{cell.model} opset {cell.opset} {cell.runtime}/{cell.precision} batch {cell.batch}"


def _summarise(cells: list[RunRequest], results: Path, run_id: str) -> int:
    latest: dict[tuple, dict] = {}
    for record in read_records(results).records:
        if record.run_id == run_id:
            latest[record.cell_key] = record.to_dict()
    rows = [latest[k] for k in dict.fromkeys(request_key(c) for c in cells) if k in latest]
    if rows:
        print(format_table(rows))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "error", "skipped")}
    print(f"\n{counts['ok']} ok, {counts['error']} error, {counts['skipped']} skipped, "
          f"{len(cells) - len(rows)} not run; run_id {run_id}; results {results}")
    return EXIT_FAILED if counts["error"] else EXIT_OK
