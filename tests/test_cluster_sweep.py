"""Sweeps across hosts on a real Ray cluster started on this machine (slow tier, no mocks).

A head (no bench_slot: it runs no cell) and worker nodes that offer different targets run
``python -m bench sweep --cluster ADDRESS`` on two tiny models x ort/ov x two targets. The tests kill the driver
and worker nodes mid-sweep and check that every cell ends with exactly one record, on a node of its target.
Nodes are kept small (no CPUs for Ray's own scheduling, 100 MB object stores): this machine has 2 cores.
Every process a test starts (Ray's and the cells') is checked gone at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_drift_pass import image_folder, onnx_with_stored_reference  # noqa: F401 - fixtures
from test_sweep import ROOT

from bench.records import read_records

pytestmark = pytest.mark.slow
ray_cluster_utils = pytest.importorskip("ray.cluster_utils", reason="ray is not installed: pip install -e '.[cluster]'")

OBJECT_STORE = 100 * 1024 * 1024
TARGETS = {"amx": {"resources": {"amx": 1}}, "avx2": {"labels": {"cpu": "avx2"}}}


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(entry.name)] = (parent, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, IndexError, ValueError):
                continue
    return found


def below(root: int, *markers: str) -> list[int]:
    """The processes below process ``root`` whose command line holds every one of ``markers``."""
    processes = _processes()
    found, stack = [], [root]
    while stack:
        parent = stack.pop()
        for pid, (ppid, cmdline) in processes.items():
            if ppid == parent:
                stack.append(pid)
                if all(marker in cmdline for marker in markers):
                    found.append(pid)
    return found


def cells_under(root: int, marker: str) -> list[int]:
    """The cell processes (``python -m bench _cell``) below process ``root`` whose request names ``marker``."""
    return below(root, " _cell ", marker)


def cells_naming(marker: str) -> list[int]:
    return [pid for pid, (_, cmdline) in _processes().items() if " _cell " in cmdline and marker in cmdline]


def processes_naming(*markers: str) -> list[int]:
    return [pid for pid, (_, cmdline) in _processes().items()
            if pid != os.getpid() and any(m in cmdline for m in markers)]


class LocalCluster:
    """A Ray head and worker nodes on this machine, started here and ended by their ids."""

    def __init__(self, tmp: Path) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths are limited
        self.marker = str(tmp)
        self._env = os.environ.copy()
        os.environ["PADDLE_ONNX_BENCH_NODE_CACHE"] = str(tmp / "node-cache")  # the nodes' export cache
        self.cluster = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": OBJECT_STORE, "temp_dir": self.temp_dir})
        self.address = self.cluster.address

    def add(self, resources: dict | None = None, labels: dict | None = None):
        return self.cluster.add_node(num_cpus=0, object_store_memory=OBJECT_STORE, temp_dir=self.temp_dir,
                                     resources={"bench_slot": 1, **(resources or {})}, labels=labels or {})

    @staticmethod
    def raylet(node) -> int:
        return node.all_processes["raylet"][0].process.pid

    def kill(self, node) -> None:
        self.cluster.remove_node(node, allow_graceful=False)

    def close(self) -> None:
        try:
            self.cluster.shutdown()
        finally:
            os.environ.clear()
            os.environ.update(self._env)
        deadline = time.monotonic() + 60
        while (left := processes_naming(self.temp_dir, self.marker)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:  # by id, then say so: a test must not leave processes behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not left, f"processes left running after the cluster was shut down: {left}"


def tiny_models(manifest: Path, tmp: Path) -> list[Path]:
    """Two models with stored reference logits for the same images (the export's drift set)."""
    second = tmp / "tiny-b"
    shutil.copytree(manifest.parent, second)
    data = json.loads((second / manifest.name).read_text())
    (second / manifest.name).write_text(json.dumps({**data, "model": "TinyB"}))
    return [manifest, second / manifest.name]


def write_config(tmp: Path, manifests: list[Path], min_duration_s: float, runtimes=("ort", "ov"),
                 drift: bool = True, name: str = "sweep") -> Path:
    config = {
        "results": str(tmp / f"{name}.jsonl"),
        "targets": TARGETS,
        "sweep": {"models": [], "manifests": [str(m) for m in manifests], "runtimes": list(runtimes),
                  "batches": [1], "targets": list(TARGETS), "drift": {"data": "export"} if drift else False},
        "measure": {"warmup": 1, "iterations": 5, "min_duration_s": min_duration_s, "max_duration_s": 10},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, address: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "sweep", "--config", str(config), "--cluster", address,
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def records_of(config: Path):
    result = read_records(Path(yaml.safe_load(config.read_text())["results"]))
    assert result.problems == [] and all(r.invalid is None for r in result.records)
    return [r.record for r in result.records]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    """Worker ``amx`` offers the resource amx; worker ``avx2`` the label cpu=avx2; the head runs no cell."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.nodes = {"amx": cluster.add({"amx": 1}), "avx2": cluster.add(labels={"cpu": "avx2"})}
        yield cluster
    finally:
        cluster.close()


def node_ids(nodes: dict) -> dict[str, str]:
    return {target: node.node_id for target, node in nodes.items()}


def test_each_cell_runs_once_on_its_target_and_a_killed_driver_resumes(
        two_targets, onnx_with_stored_reference, tmp_path):  # noqa: F811 - the fixture imported above
    config = write_config(tmp_path, tiny_models(onnx_with_stored_reference, tmp_path), min_duration_s=1.0)
    results = tmp_path / "sweep.jsonl"

    def stop_mid_sweep(how: int) -> tuple[int, str]:
        """Start the sweep, stop its driver with ``how`` once a record more has landed and a cell is in flight."""
        before = len(records_of(config)) if results.exists() else 0
        driver = start(config, two_targets.address)
        wait_for(lambda: results.exists() and len(records_of(config)) > before, 240, "a record")
        wait_for(lambda: cells_naming(str(tmp_path)), 60, "a cell in flight")
        driver.send_signal(how)
        _, err = driver.communicate(timeout=120)
        # Either way the cells in flight stop (SIGKILL: Ray ends a dead driver's tasks, the cells die with them).
        wait_for(lambda: not cells_naming(str(tmp_path)), 60, "the stopped driver's cells to end")
        return driver.returncode, err

    code, err = stop_mid_sweep(signal.SIGTERM)
    assert code == 143 and "terminated by SIGTERM" in err and "rerun the same command to resume" in err, (code, err)
    code, err = stop_mid_sweep(signal.SIGKILL)
    assert code == -signal.SIGKILL
    done_before = len(records_of(config))
    assert 2 <= done_before < 8

    code, out, err = finish(start(config, two_targets.address))
    assert code == 0, err
    assert f"8 cells, {done_before} already done, {8 - done_before} to run" in err
    got = records_of(config)
    assert len(got) == 8 and all(r.status == "ok" for r in got)  # none lost, none twice
    assert Counter(r.sweep_key for r in got) == Counter({k: 1 for k in {r.sweep_key for r in got}})
    assert {(r.model.name, r.runtime.name, r.target) for r in got} == {
        (m, rt, t) for m in ("Tiny", "TinyB") for rt in ("ort", "ov") for t in ("amx", "avx2")}
    ids = node_ids(two_targets.nodes)
    for r in got:
        assert r.placement["node_id"] == ids[r.target], r.placement  # each on a node of its target
        assert r.drift["n"] == 5 and r.drift["reference_source"].startswith("export")  # the shipped images
        assert r.placement["artifact"]["arrived_from"] in ("object store", "node cache")
        assert r.placement["cell_niceness"] == (0 if os.geteuid() == 0 else r.placement["cell_niceness"])
        assert r.machine and r.environment["host"] and r.timing.latency_ms["p50"] > 0  # a local cell's record
    assert "target amx:" in out and "target avx2:" in out and "8 ok, 0 error" in out

    again = finish(start(config, two_targets.address))
    assert again[0] == 0 and "8 cells, 8 already done, 0 to run" in again[2]
    assert len(records_of(config)) == 8


def test_the_files_of_an_explain_pass_on_a_node_land_beside_the_results(
        two_targets, onnx_with_stored_reference, tmp_path):  # noqa: F811 - the fixture imported above
    """A cell that fails its drift gates runs the explain pass on its node; the files the record names come back
    to the driver, beside the results file, where the record says they are."""
    from core.logits import Logits

    reference = onnx_with_stored_reference.parent / "reference.npz"
    logits, meta = Logits.load(reference)
    Logits(logits.values + 1e-3, logits.names, logits.labels).save(reference, meta)  # past the fp32 gate (1e-4)
    config = write_config(tmp_path, [onnx_with_stored_reference], 0.0, runtimes=("ov",))
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "sweep": {**data["sweep"], "targets": ["amx"]}}))
    code, out, err = finish(start(config, two_targets.address))
    assert code == 0, err
    (got,) = records_of(config)
    assert got.gates["passed"] is False and got.explain["status"] == "complete", got.explain
    assert got.explain["files"] and all((tmp_path / path).is_file() for path in got.explain["files"].values())


def test_a_target_no_node_offers_is_one_line_and_exit_2(two_targets, onnx_artifact, tmp_path):
    config = write_config(tmp_path, [onnx_artifact], 0.0, drift=False)
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "targets": {**TARGETS, "gpu": {"resources": {"GPU": 1}}},
                                      "sweep": {**data["sweep"], "targets": ["amx", "gpu"]}}))
    code, out, err = finish(start(config, two_targets.address))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: no node of the cluster at {two_targets.address} offers target 'gpu' (resources "
                          "{'GPU': 1.0}) with a bench_slot; nodes: ")
    assert err.rstrip().endswith("""ray start --address HEAD:6379 --resources '{"bench_slot": 1}' --num-gpus 1""")
    assert not (tmp_path / "sweep.jsonl").exists()  # nothing ran


def test_a_runtime_missing_on_a_node_is_an_error_naming_the_node(two_targets, onnx_artifact, tmp_path):
    from runtimes import probe

    if probe("trt").available:
        pytest.skip("TensorRT is available here: a node lacking a runtime cannot be had on this machine")
    config = write_config(tmp_path, [onnx_artifact], 0.0, runtimes=("trt", "ort"), drift=False)
    code, out, err = finish(start(config, two_targets.address))
    assert code == 1, err
    got = {(r.model.name, r.runtime.name, r.target): r for r in records_of(config)}
    assert len(got) == 4
    assert {k for k, r in got.items() if r.status == "ok"} == {("Tiny", "ort", "amx"), ("Tiny", "ort", "avx2")}
    ids = node_ids(two_targets.nodes)
    for target in ("amx", "avx2"):
        failed = got["Tiny", "trt", target]
        assert failed.placement["node_id"] == ids[target]
        assert "runtime 'trt' is not available" in failed.error.message  # the node's probe, with its reason
    assert "error: Tiny opset 13 trt/fp32 batch 1 [amx] on " in err


def test_killed_worker_nodes_lose_and_duplicate_no_cell(onnx_artifact, tmp_path):
    """Two amx nodes and one avx2 node. Killing an amx node mid-cell retries that cell once on the other; killing
    the only avx2 node mid-cell records an error naming it, and the avx2 cells left an error saying no node is
    left. A rerun with a new avx2 node and --retry-errors completes the sweep with one ok record per cell."""
    cluster = LocalCluster(tmp_path)
    try:
        first, second = cluster.add({"amx": 1}), cluster.add({"amx": 1})
        avx2 = cluster.add(labels={"cpu": "avx2"})
        models = [onnx_artifact, *tiny_models(onnx_artifact, tmp_path)[1:]]
        config = write_config(tmp_path, models, min_duration_s=3.0, drift=False)
        driver = start(config, cluster.address)
        for node in (first, avx2):
            wait_for(lambda n=node: cells_under(cluster.raylet(n), str(tmp_path)), 240, "a cell on the node")
            cluster.kill(node)
        code, out, err = finish(driver)
        assert code == 1, err
        assert "Raylet" not in out + err  # the sweep says what a dead node cost; Ray's own notices stay out
        got = records_of(config)
        assert len(got) == 8 and len({r.sweep_key for r in got}) == 8  # every cell once
        amx = [r for r in got if r.target == "amx"]
        assert all(r.status == "ok" and r.placement["node_id"] in (first.node_id, second.node_id) for r in amx)
        retried = [r for r in amx if r.placement["attempt"] == 2]
        assert retried  # the cell in flight on the killed node (and any Ray had queued there)
        for r in retried:
            assert r.placement["node_id"] == second.node_id and r.placement["retry_of"]["node_id"] == first.node_id
            assert f"node ID: {first.node_id}" in r.placement["retry_of"]["error"]
        errors = [r for r in got if r.status == "error"]
        assert errors and all(r.target == "avx2" for r in errors)
        killed = [r for r in errors if r.error.type == "NodeDied"]
        assert killed and all(avx2.node_id in r.error.message and r.placement["node_id"] == avx2.node_id and
                              "no other live node of the target can retry it" in r.error.message for r in killed)
        assert all(r.error.type == "NoNodeForTarget" for r in errors if r not in killed)

        replacement = cluster.add(labels={"cpu": "avx2"})
        code, out, err = finish(start(config, cluster.address, "--retry-errors"))
        assert code == 0, err
        final = records_of(config)
        ok = Counter(r.sweep_key for r in final if r.status == "ok")
        assert len(ok) == 8 and set(ok.values()) == {1}  # exactly one ok record per cell
        assert all(r.placement["node_id"] == replacement.node_id for r in final[len(got):])
    finally:
        cluster.close()
