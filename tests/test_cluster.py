"""Sweeps across hosts, the parts that need no Ray cluster: bench.yaml's targets, the target axis of the plan,
placement options, records that name their target, the shipped export, the per-target report, the one-line
refusal of a cluster that is not there, and the default path never importing Ray. (The real cluster runs are in
test_cluster_sweep.py, slow tier.)"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_manifest
from test_report import record, write
from test_sweep import ROOT, write_config

from bench.cell import run_cell
from bench.cluster.artifacts import IMAGES_DIR, ArtifactCorrupt, Bundle, write_verified
from bench.cluster.connect import start_command
from bench.cluster.dispatch import write_beside
from bench.cluster.placement import task_options
from bench.config import ConfigError, config_from_dict
from bench.records import read_records
from bench.report.build import build_report
from bench.request import BenchRequest, Output, Target
from bench.sweep.plan import plan, sweep_id
from bench.sweep.runner import finished_statuses
from bench.targets import ANY_NODE, TargetSpec, label_matches
from runtimes.base import RuntimeOptions

TARGETS = {"amx": {"resources": {"xeon-amx": 1}}, "arm": {"labels": {"arch": "arm64"}}}


def test_targets_are_read_and_checked():
    cfg = config_from_dict({"targets": TARGETS, "sweep": {"targets": ["amx", "arm"]}, "cluster": "auto"})
    assert cfg.cluster == "auto" and cfg.sweep.targets == ("amx", "arm")
    assert cfg.targets["amx"] == TargetSpec("amx", {"xeon-amx": 1.0}, {})
    assert cfg.targets["arm"].labels == {"arch": "arm64"}
    assert config_from_dict({}).sweep.targets == () and config_from_dict({}).cluster is None
    for data, message in [
        ({"targets": TARGETS, "sweep": {"targets": ["gpu"]}},
         "sweep.targets[0]: unknown target 'gpu'; defined: amx, arm"),
        ({"sweep": {"targets": ["gpu"]}}, "unknown target 'gpu'; defined: none: define them under targets:"),
        ({"targets": {"amx": {}}}, "targets.amx: name the resources or labels a node of this target offers"),
        ({"targets": {"amx": {"resources": {"bench_slot": 1}}}}, "every cell takes its node's bench_slot"),
        ({"targets": {"amx": {"cores": 4}}}, "targets.amx.cores: unknown key; allowed: resources, labels"),
    ]:
        with pytest.raises(ConfigError) as caught:
            config_from_dict(data)
        assert message in str(caught.value)


def test_a_node_offers_a_target_with_its_slot_resources_and_labels():
    amx = TargetSpec("amx", {"xeon-amx": 1}, {"arch": "x86_64"})
    assert amx.offered_by({"bench_slot": 1, "xeon-amx": 1}, {"arch": "x86_64"})
    assert not amx.offered_by({"xeon-amx": 1}, {"arch": "x86_64"})  # no slot: never runs cells
    assert not amx.offered_by({"bench_slot": 1}, {"arch": "x86_64"})
    assert not amx.offered_by({"bench_slot": 1, "xeon-amx": 1}, {"arch": "aarch64"})
    assert ANY_NODE.offered_by({"bench_slot": 1}, {}) and not ANY_NODE.offered_by({"CPU": 2}, {})
    assert label_matches("a", "in(a, b)") and not label_matches("c", "in(a,b)") and label_matches("c", "!in(a,b)")
    assert label_matches("x", "!y") and not label_matches("y", "!y") and not label_matches(None, "y")


def test_task_options_take_the_slot_and_the_target():
    options = task_options(TargetSpec("gpu", {"GPU": 1, "a100": 1}, {"arch": "x86_64"}), avoid=["n1"])
    assert options["num_gpus"] == 1 and options["num_cpus"] == 0
    assert options["resources"] == {"a100": 1, "bench_slot": 1}
    assert options["label_selector"] == {"arch": "x86_64", "ray.io/node-id": "!n1"}
    assert options["max_retries"] == 0  # the driver retries, away from the node that failed
    assert task_options(ANY_NODE, slot=False) == {"num_cpus": 0, "num_gpus": 0, "max_retries": 0,
                                                  "retry_exceptions": False, "resources": {}}
    assert task_options(ANY_NODE, avoid=["a", "b"])["label_selector"] == {"ray.io/node-id": "!in(a,b)"}
    assert start_command(TargetSpec("arm", {"GPU": 2, "a100": 1}, {"arch": "arm64", "os": "!windows"})) == (
        """ray start --address HEAD:6379 --resources '{"bench_slot": 1, "a100": 1}' --num-gpus 2 --labels arch=arm64""")


def test_the_plan_crosses_every_cell_with_every_target(onnx_artifact, tmp_path):
    config = yaml.safe_load(write_config(tmp_path, [onnx_artifact], batches=(1, 2)).read_text())
    local = plan(config_from_dict(config), "r", tmp_path / "r.jsonl")
    cfg = config_from_dict({**config, "targets": TARGETS, "sweep": {**config["sweep"], "targets": ["amx", "arm"]}})
    cells = plan(cfg, sweep_id(cfg), tmp_path / "r.jsonl")
    assert [(c.batch, c.host_target) for c in cells] == [(1, "amx"), (1, "arm"), (2, "amx"), (2, "arm")]
    assert len({c.sweep_key for c in cells}) == 4 and len({c.cell_key for c in cells}) == 2
    assert cells[1].label.endswith("batch 1 [arm]")
    assert BenchRequest.from_dict(json.loads(json.dumps(cells[1].to_dict()))) == cells[1]  # as a node receives it
    assert [c.host_target for c in local] == [None, None]
    assert sweep_id(cfg) == sweep_id(config_from_dict(config))  # an axis, not a setting: the sweep keeps its id


def test_records_name_their_target_and_resume_per_target(tmp_path):
    results = tmp_path / "runs.jsonl"
    local, placed = record(), record()
    placed.placement = {"target": "amx", "node_id": "n1"}
    write(results, [local, placed])
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert "placement" not in lines[0] and lines[1]["placement"]["target"] == "amx"  # a local record keeps its shape
    back = read_records(results).valid()
    assert [r.target for r in back] == [None, "amx"]
    assert finished_statuses(results, "r1") == {(local.cell_key, None): {"ok"}, (local.cell_key, "amx"): {"ok"}}


def test_a_shipped_export_runs_as_the_model_it_stands_for(tmp_path):
    """On a node, the driver's export is run as the zoo model's own: no export, no freshness check against this
    machine's packages, and the record keeps the cell's key (so the driver's resume finds it)."""
    from conftest import make_tiny_onnx

    folder = tmp_path / "shipped"
    folder.mkdir()
    make_tiny_onnx(folder / "model.onnx", opset=17)
    manifest = write_manifest(folder, name="MobileViT_XXS", opset=17)
    artifacts = tmp_path / "artifacts"
    request = BenchRequest("null", Target(model="MobileViT_XXS", opset=17, no_export=True, artifacts=str(artifacts),
                                          shipped_manifest=str(manifest)),
                           RuntimeOptions(batch=1), output=Output(str(tmp_path / "r.jsonl"), "r"), host_target="amx")
    request = dataclasses.replace(request, measure=dataclasses.replace(request.measure, warmup=1, iterations=3,
                                                                       min_duration_s=0.0))
    result = run_cell(request)
    assert result.record.status == "ok", result.record.error
    assert result.record.cell_key == request.cell_key and result.record.model.sha256
    assert result.record.placement == {"target": "amx"} and not artifacts.exists()  # nothing exported


def _bundle(contents: dict[str, bytes]) -> Bundle:
    files = tuple((name, hashlib.sha256(data).hexdigest(), len(data)) for name, data in sorted(contents.items()))
    return Bundle("d" * 64, "model.onnx.json", files, [])


def test_a_bundle_is_checked_by_sha256_on_arrival_and_names_the_nodes_images(tmp_path):
    manifest = {"reference": {"images": {"folder": "/driver/only/path", "file": "ref.npz"}}}
    contents = {"model.onnx.json": json.dumps(manifest).encode(), "model.onnx": b"onnx",
                f"{IMAGES_DIR}/val_list.txt": b"a.jpg 3\n"}
    bundle = _bundle(contents)
    with pytest.raises(ArtifactCorrupt, match="model.onnx of bundle dddddddddddd arrived with 5 bytes"):
        write_verified(bundle, {**contents, "model.onnx": b"onnx!"}, tmp_path / "cache")
    assert not (tmp_path / "cache" / bundle.digest).exists()  # nothing half-written is taken for an export
    path = write_verified(bundle, contents, tmp_path / "cache")
    assert path == tmp_path / "cache" / bundle.digest / "model.onnx.json"
    folder = json.loads(path.read_text())["reference"]["images"]["folder"]
    assert folder == str(path.parent / IMAGES_DIR) and (Path(folder) / "val_list.txt").read_bytes() == b"a.jpg 3\n"


def test_files_a_cell_wrote_on_its_node_land_beside_the_results(tmp_path):
    results = tmp_path / "out" / "runs.jsonl"
    write_beside(results, {"explain/Tiny-ov-int8-b1/report.md": b"# drift\n"})
    assert (tmp_path / "out" / "explain" / "Tiny-ov-int8-b1" / "report.md").read_bytes() == b"# drift\n"
    for name in ("../escape.md", "/etc/x"):
        with pytest.raises(ValueError, match="outside the results folder"):
            write_beside(results, {name: b"x"})
    assert not (tmp_path / "escape.md").exists()


def test_the_report_has_a_table_per_target_and_never_pools_hosts(tmp_path):
    cells = []
    for host, target, p50 in (("box-a", "amx", 4.0), ("box-b", "amx", 4.5), ("box-c", "avx2", 6.0)):
        cell = record(runtime="ov", p50=p50, host=host)
        cell.placement = {"target": target, "node_id": f"node-{host}", "node_host": host, "attempt": 1}
        cells.append(cell)
    cells[2].placement.update(attempt=2, retry_of={"node": "box-d (10.0.0.4, node 5f3a)", "error": "NodeDied: x"})
    text = build_report([write(tmp_path / "a.jsonl", cells)], tmp_path / "out").read_text()
    section = text.split("## Per target")[1].split("\n## ")[0]
    assert "### amx" in section and "### avx2" in section
    assert "| LeViT_128S | ov | fp32 | 17 | 1 | latency | box-a | node-box-a | 1 | ok | 4.000 |" in section
    assert "| LeViT_128S | ov | fp32 | 17 | 1 | latency | box-b | node-box-b | 1 | ok | 4.500 |" in section
    assert "first attempt on box-d (10.0.0.4, node 5f3a) failed: NodeDied: x" in section
    assert "ov @box-a [amx]" in text and "ov @box-c [avx2]" in text  # figures' series: host and target
    local = build_report([write(tmp_path / "b.jsonl", [record()])], tmp_path / "out-b").read_text()
    assert "## Per target" not in local


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_no_cluster_at_the_address_is_one_line_and_exit_2(onnx_artifact, tmp_path, scheme):
    address = f"{scheme}127.0.0.1:{_free_port()}"
    config = write_config(tmp_path, [onnx_artifact])
    proc = subprocess.run([sys.executable, "-m", "bench", "sweep", "--config", str(config), "--cluster", address],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: no Ray cluster at {address}: Connection refused (start one with "
                                        "`ray start --head`, or check the address)"]
    assert not (tmp_path / "runs.jsonl").exists()  # nothing ran


def test_targets_without_a_cluster_are_a_usage_error(onnx_artifact, tmp_path):
    config = write_config(tmp_path, [onnx_artifact], targets=["amx"])
    data = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**data, "targets": TARGETS}))
    proc = subprocess.run([sys.executable, "-m", "bench", "sweep", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: sweep.targets place cells on the nodes of a cluster: pass --cluster ADDRESS (or set cluster: in "
        "bench.yaml)"]


def test_the_default_sweep_never_imports_ray(onnx_artifact, tmp_path):
    """Without a cluster nothing loads Ray: ``-X importtime`` lists every module the sweep process imports."""
    config = write_config(tmp_path, [onnx_artifact], batches=(1,), min_duration_s=0.0)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bench", "sweep", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "bench.sweep.plan" in imported and "bench.targets" in imported  # the listing is the sweep's
    assert not {m for m in imported if m == "ray" or m.startswith(("ray.", "bench.cluster"))}
    assert [r.status for r in read_records(tmp_path / "runs.jsonl").valid()] == ["ok"]


def test_only_the_cluster_package_imports_ray():
    """Ray stays behind bench.cluster, which the sweep imports only when asked for a cluster."""
    import ast

    found = []
    for package in ("core", "export", "runtimes", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n == "ray" or n.startswith("ray.") for n in names):
                    found.append(path.relative_to(ROOT).as_posix())
    assert found and all(p.startswith("bench/cluster/") for p in found), found
    runner = (ROOT / "bench" / "sweep" / "runner.py").read_text()
    assert "\nfrom bench.cluster" not in runner and "\nimport bench.cluster" not in runner  # lazily, in functions

