"""The driver's side of a sweep across hosts: hand each cell to a node of its target, write every record.

One writer: records come back from the nodes and only this process appends them to the results file, so a
cell is recorded once however its attempts end. An attempt that fails outside the cell (the node died, the
worker crashed, the export did not arrive intact) is tried once more on another live node of the same target;
when there is none, or the retry fails too, the cell gets an error record naming the node. A cell whose target
has no live node left gets an error record saying so instead of waiting forever. Cells are handed to Ray a few
per node at a time, so the exports in the object store are those of cells about to run.

Ctrl-C or SIGTERM cancels the cells in flight (their processes stop, no record); SIGKILL leaves that to Ray,
which ends a dead driver's tasks. A rerun resumes either way.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import sys
import time
import uuid
from collections import Counter, deque
from pathlib import Path

from tqdm import tqdm

from bench.accuracy.drift_pass import EXPORT_IMAGES
from bench.cell import export_spec, skeleton_record
from bench.cluster.artifacts import Bundle, pack
from bench.cluster.connect import Cluster, Node, get_result, import_ray
from bench.cluster.node import NodeFailure, run_cell_on_node
from bench.cluster.placement import run_on_target
from bench.records import Record, append_record
from bench.request import BenchRequest
from bench.table import one_line
from bench.targets import ANY_NODE, TargetSpec
from core.files import write_bytes_atomic
from core.manifest import manifest_path_of
from core.proc import Terminated, terminated_by

WATCH_S = 2.0  # while no cell finishes, how often to look for cells that no live node can take
IN_FLIGHT_PER_NODE = 2  # cells handed to Ray per node of a target: one measured, the next one's export on its way


@dataclasses.dataclass
class Attempt:
    cell: BenchRequest
    target: TargetSpec
    number: int = 1
    avoid: tuple[str, ...] = ()  # node ids this attempt must not run on (where the first one failed)
    retry_of: dict | None = None  # the failed first attempt: node and error
    submitted: float = 0.0


class Dispatcher:
    def __init__(self, cluster: Cluster, targets: dict[str, TargetSpec], results: Path, timeout: float,
                 bar: tqdm) -> None:
        self.cluster, self.targets, self.results, self.timeout, self.bar = cluster, targets, results, timeout, bar
        self.bundles: dict[tuple, Bundle | None] = {}
        self.uses: Counter[tuple] = Counter()  # cells still to settle per bundle: at 0 it leaves the object store

    def run(self, cells: list[BenchRequest]) -> None:
        ray = import_ray()
        queue = deque(Attempt(cell, self.targets.get(cell.host_target or "", ANY_NODE)) for cell in cells)
        self.uses.update(_bundle_key(a.cell) for a in queue)
        pending: dict = {}  # ObjectRef -> Attempt
        try:
            while queue or pending:
                self._submit(queue, pending)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WATCH_S)
                for ref in ready:
                    self._settle(pending.pop(ref), ref, queue)
                if not ready:
                    self._strand(pending)
        except KeyboardInterrupt as exc:
            for ref in pending:
                ray.cancel(ref, force=True)  # the worker dies, and its cell process with it: no record
            signum = terminated_by()
            if signum and not isinstance(exc, Terminated):  # ray.wait turned the SIGTERM into a plain Ctrl-C
                raise Terminated(signum) from None
            raise

    def _submit(self, queue: deque, pending: dict) -> None:
        nodes = self.cluster.nodes()
        in_flight = Counter(a.target.name for a in pending.values())
        waiting = deque()
        while queue:
            attempt = queue.popleft()
            limit = IN_FLIGHT_PER_NODE * max(1, sum(n.offers(attempt.target) for n in nodes))
            if in_flight[attempt.target.name] >= limit:
                waiting.append(attempt)
                continue
            in_flight[attempt.target.name] += 1
            cell = attempt.cell
            request = dataclasses.replace(cell, target=_shipped_target(cell),
                                          output=dataclasses.replace(cell.output, record_id=uuid.uuid4().hex))
            attempt.submitted = time.monotonic()
            ref = run_on_target(run_cell_on_node, request.to_dict(), self._bundle(cell), self.timeout,
                                {"attempt": attempt.number}, target=attempt.target, avoid=attempt.avoid)
            pending[ref] = attempt
        queue.extend(waiting)

    def _bundle(self, cell: BenchRequest) -> Bundle | None:
        key = _bundle_key(cell)
        if key not in self.bundles:
            manifest, with_images = key
            # A manifest missing here is the cell's to report, on the node, as a local cell would.
            self.bundles[key] = pack(manifest, with_images) if manifest.is_file() else None
        return self.bundles[key]

    def _settle(self, attempt: Attempt, ref, queue: deque) -> None:
        try:
            outcome = get_result(ref)
        except Exception as exc:  # Ray's errors for a dead node or worker, or NodeFailure
            self._failed(attempt, exc, queue)
            return
        record = Record.from_dict(outcome["record"])
        write_beside(self.results, outcome.get("files") or {})
        record.placement["seconds"]["driver"] = round(time.monotonic() - attempt.submitted, 3)
        if attempt.retry_of:
            record.placement["retry_of"] = attempt.retry_of
        self._write(record, attempt, outcome.get("error_line") or "")

    def _failed(self, attempt: Attempt, exc: Exception, queue: deque) -> None:
        node_id, kind, why = failure_of(exc)
        node = self.cluster.known.get(node_id or "")
        where = node.name if node else f"node {node_id}" if node_id else "an unknown node"
        avoid = (node_id,) if node_id else ()
        label, target = attempt.cell.label, attempt.target.name
        if attempt.number == 1 and self.cluster.offering(attempt.target, avoid):
            self.bar.write(f"retry: {label}: {why}; running it once more on another node of target {target}",
                           file=sys.stderr)
            queue.appendleft(Attempt(attempt.cell, attempt.target, 2, avoid,
                                     {"node": where, "node_id": node_id, "error": f"{kind}: {why}"}))
            return
        then = "no other live node of the target can retry it" if attempt.number == 1 else "it failed on its retry"
        self._write(self._error(attempt, kind, f"{why} ({where}; {then})", node), attempt)

    def _strand(self, pending: dict) -> None:
        """Cells whose target no live node offers any more get an error record instead of waiting forever."""
        nodes = self.cluster.nodes()
        for ref, attempt in list(pending.items()):
            if any(n.offers(attempt.target) and n.node_id not in attempt.avoid for n in nodes):
                continue
            import_ray().cancel(ref, force=True)
            del pending[ref]
            message = (f"no live node of the cluster offers target {attempt.target.name} "
                       f"({attempt.target.describe()}) any more; nodes: {self.cluster.describe_nodes()}")
            self._write(self._error(attempt, "NoNodeForTarget", message, None), attempt)

    def _error(self, attempt: Attempt, kind: str, message: str, node: Node | None) -> Record:
        """The driver's record of a cell that did not come back: the node it was on, as far as known."""
        record = skeleton_record(attempt.cell, "error", kind, message)
        record.placement = {**(record.placement or {}), **(node.facts() if node else {}), "attempt": attempt.number}
        if attempt.retry_of:
            record.placement["retry_of"] = attempt.retry_of
        # Not this machine's facts: the record belongs with the node's cells (the report groups by host).
        record.environment = {"host": node.host if node else None, "recorded_by": platform.node()}
        return record

    def _write(self, record: Record, attempt: Attempt, error_line: str = "") -> None:
        append_record(self.results, record)  # the one writer
        key = _bundle_key(attempt.cell)
        self.uses[key] -= 1
        if self.uses[key] <= 0:
            self.bundles.pop(key, None)  # the last reference: Ray frees the object
        if record.status != "ok":
            host = (record.placement or {}).get("node_host")
            message = error_line or (record.error.message if record.error else record.status)
            where = f" on {host}" if host else ""
            self.bar.write(f"error: {attempt.cell.label}{where}: {one_line(message)}", file=sys.stderr)
        self.bar.update(1)


def write_beside(results: Path, files: dict[str, bytes]) -> None:
    """Write what a cell wrote beside its record on the node (an explain folder) beside the results file, where the
    record says it is; a name that would leave that folder is refused."""
    for name, data in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"a node sent a file named {name!r}, outside the results folder")
        write_bytes_atomic(results.parent / name, data)


def _bundle_key(cell: BenchRequest) -> tuple[Path, bool]:
    """(manifest on the driver, whether the export's images travel with it): what a cell's node needs."""
    if cell.target.manifest:
        manifest = manifest_path_of(Path(cell.target.manifest)).resolve()
    else:
        manifest = export_spec(cell).manifest_path.resolve()
    return manifest, cell.drift is not None and cell.drift.data == EXPORT_IMAGES


def _shipped_target(cell: BenchRequest):
    """The cell's model as the node gets it: a manifest named by its absolute path, so the cell key the node
    computes (``manifest:<path>``) is the driver's."""
    if not cell.target.manifest:
        return cell.target
    return dataclasses.replace(cell.target, manifest=str(manifest_path_of(Path(cell.target.manifest)).resolve()))


_NODE_ID = re.compile(r"node ID: ([0-9a-f]{16,})")
_RAY_ADVICE = " This can happen"


def failure_of(exc: Exception) -> tuple[str | None, str, str]:
    """(node id if known, kind, one line) of a failed attempt: Ray's NodeDiedError names the node in its message;
    a failure inside the task is a NodeFailure that carries it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, NodeFailure):
        return cause.node_id, "NodeFailure", one_line(cause.message)
    text = str(exc).strip().split(_RAY_ADVICE)[0]  # what failed and where, not Ray's advice on debugging it
    match = _NODE_ID.search(text)
    kind = type(exc).__name__.removesuffix("Error") or "RayError"
    return (match.group(1) if match else None), kind, one_line(text.splitlines()[0] if text else kind)


def run_on_cluster(cluster: Cluster, todo: list[BenchRequest], total: int, targets: dict[str, TargetSpec],
                   results: Path, timeout: float) -> None:
    """Run ``todo`` (of ``total`` cells in the sweep) on the cluster, a progress bar on stderr."""
    with tqdm(total=total, initial=total - len(todo), desc="sweep", unit="cell", file=sys.stderr,
              dynamic_ncols=True) as bar:
        Dispatcher(cluster, targets, results, timeout, bar).run(todo)
