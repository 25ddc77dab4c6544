"""What a cluster node does for one cell: unpack the shipped export, run ``python -m bench _cell`` in its own
process exactly as a local sweep does (same timeout, same record, machine facts and load flag taken here), and
hand the record back to the driver, which alone writes the results file.

Exactly as a local cell means in the environment the node was started with: a Ray worker runs at nice 15 and
with ``OMP_NUM_THREADS=1`` set for its task, and neither may reach the timed process. The cell gets the
environment the worker was started with (``/proc/self/environ``, before Ray's per-task settings) less Ray's own
variables, and the node's scheduling priority (the raylet's); a priority that cannot be restored (not root: start
the node with ``RAY_worker_niceness=0``) is recorded in the record's ``placement``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

from bench.cell import EXIT_INTERRUPTED, lost_cell_record
from bench.cluster.artifacts import Bundle, node_cache, unpack
from bench.records import Record, read_records
from bench.request import BenchRequest
from core.proc import pid_alive, python_module, run_child

CHECKOUT = Path(__file__).resolve().parents[2]  # the cell runs from the node's checkout, as a local sweep from its own


class CellStopped(RuntimeError):
    """The cell process was stopped (SIGTERM/SIGINT on the node) before it wrote a record."""


class NodeFailure(RuntimeError):
    """Running the cell failed on this node outside the cell itself; names the node for the driver."""

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(node_id, message)
        self.node_id = node_id
        self.message = message

    def __str__(self) -> str:
        return self.message


def this_node() -> dict[str, str]:
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "node_host": platform.node()}


def run_cell_on_node(request: dict, bundle: Bundle | None, timeout: float, attempt: dict) -> dict:
    """The Ray task of one cell: its record as a dict, with ``placement`` naming this node."""
    node = this_node()
    try:
        return _run(BenchRequest.from_dict(request), bundle, timeout, {**attempt, **node})
    except Exception as exc:
        raise NodeFailure(node["node_id"], f"{type(exc).__name__} on {node['node_host']} ({node['node_ip']}): "
                                           f"{exc}") from exc


def _run(request: BenchRequest, bundle: Bundle | None, timeout: float, placement: dict) -> dict:
    started = time.monotonic()
    cache = node_cache()
    # No bundle: the driver has no such manifest; the cell looks for it here and says so, as a local cell would.
    manifest, arrived = unpack(bundle, cache) if bundle else (None, None)
    work = _scratch_folder(cache, request.output.record_id)
    scratch = work / "runs.jsonl"
    request = replace(request, target=replace(request.target, shipped_manifest=manifest and str(manifest),
                                              artifacts=str(cache / "artifacts")),
                      output=replace(request.output, results=str(scratch)))
    niceness = _restore_niceness()
    cell_started = time.monotonic()
    child = run_child(python_module("bench", "_cell", json.dumps(request.to_dict())), timeout, cwd=CHECKOUT,
                      env=launch_environment(), capture_stdout=False)
    cell_s = time.monotonic() - cell_started
    if child.returncode in (EXIT_INTERRUPTED, -signal.SIGINT):  # as a local sweep reads it: stopped, no record
        raise CellStopped(f"the cell process was stopped ({child.error_line or child.returncode}) and wrote no record")
    found = [r for r in read_records(scratch).valid() if r.record_id == request.output.record_id]
    # What the cell wrote beside its record (an explain pass's folder, which the record names relative to it).
    files = {p.relative_to(work).as_posix(): p.read_bytes() for p in sorted(work.rglob("*"))
             if p.is_file() and p != scratch}
    shutil.rmtree(work, ignore_errors=True)
    record: Record = found[-1] if found else lost_cell_record(request, child, timeout)
    shipped = {"bundle": bundle.digest, "bytes": bundle.size, "arrived_from": arrived} if bundle else None
    record.placement = {**(record.placement or {}), **placement, "artifact": shipped, "cell_niceness": niceness,
                        "seconds": {"task": round(time.monotonic() - started, 3), "cell_process": round(cell_s, 3)}}
    return {"record": record.to_dict(), "files": files, "exit_code": child.returncode, "error_line": child.error_line}


def launch_environment() -> dict[str, str]:
    """The environment this worker process was started with, less Ray's variables (see the module's doc)."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    except OSError:  # not Linux: the current one, less what Ray sets per task
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return {k: v for k, v in env.items() if not k.startswith("RAY_") and k != "PYTHONBREAKPOINT"}


def _restore_niceness() -> int:
    """Give this worker (and so the cell) the raylet's scheduling priority; the niceness the cell will run at."""
    wanted = _niceness_of(os.environ.get("RAY_RAYLET_PID"))
    if wanted is not None and wanted < os.getpriority(os.PRIO_PROCESS, 0):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, wanted)
        except OSError:  # lowering it needs root or CAP_SYS_NICE: recorded
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)


def _niceness_of(pid: str | None) -> int | None:
    try:
        return int(Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[16])
    except (TypeError, ValueError, OSError, IndexError):
        return None


def _scratch_folder(cache: Path, record_id: str | None) -> Path:
    """Where this worker's cell writes (its record, an explain folder); those of dead workers are removed."""
    scratch = cache / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    for folder in scratch.iterdir():
        if folder.name.isdigit() and int(folder.name) != os.getpid() and not pid_alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = scratch / str(os.getpid()) / str(record_id)
    mine.mkdir(parents=True, exist_ok=True)
    return mine
