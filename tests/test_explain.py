"""``python -m bench explain`` and a cell's explain section, on tiny ONNX models (tests/explain_models.py).

The core check of issue 14: perturb one named layer's weights in a copy of the ONNX and the tool names that
layer as the first divergence, with ONNX Runtime and with OpenVINO as the candidate runtime.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from explain_models import perturbed_export, write_export

from bench.explain.run import ExplainSettings, Target, reference_of, run_explain
from core.artifact import Artifact


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("explain") / "fp32")


def target_of(manifest: Path, runtime: str, precision: str = "fp32") -> Target:
    artifact = Artifact.from_manifest(manifest, verify=True)
    return Target(runtime, precision, artifact, reference_of(artifact), batch=8, threads=1)


def test_graph_index_orders_tensors_and_finds_residual_blocks(fp32_export):
    import onnx

    from bench.explain.graph import index_graph

    graph = index_graph(onnx.load(str(fp32_export.parent / "model.onnx")))
    assert graph.names[0] == "stem.conv.out" and graph.names[-1] == "logits"
    assert [t for t, i in graph.tensors.items() if i.residual] == ["blocks.0.out", "blocks.1.out"]
    blocks = {t: graph.tensors[t].block for t in ("stem.conv.out", "blocks.0.fc2.out", "blocks.0.out",
                                                  "blocks.1.fc1.out", "logits")}
    assert blocks == {"stem.conv.out": 0, "blocks.0.fc2.out": 0, "blocks.0.out": 0, "blocks.1.fc1.out": 1,
                      "logits": 2}
    assert graph.tensors["head.fc.out"].layer == "head.fc"
    assert graph.tensors["blocks.0.fc2.out"].inputs == ("blocks.0.act.out",)  # weights are not inputs
    assert not graph.tensors["blocks.0.bias.out"].residual  # activation + weight: not a residual


@pytest.mark.parametrize("runtime", ["ort", "ov"])
@pytest.mark.parametrize(("node", "initializer"), [("stem.bn", "stem.bn.scale"),
                                                   ("blocks.1.fc1", "blocks.1.fc1.weight")])
def test_a_perturbed_layer_is_named_as_the_first_divergence(fp32_export, tmp_path, runtime, node, initializer):
    candidate = perturbed_export(fp32_export, tmp_path / "broken", initializer)
    outcome = run_explain(target_of(candidate, runtime), ExplainSettings(threshold=1e-3, fixes=False), None)
    ex, first = outcome.explanation, outcome.section["first_divergence"]
    report = "\n".join(outcome.lines)
    assert first is not None and first["node"] == node, report
    assert first["run"] == "instrumented" and first["kind"] == "jump" and first["growth"] > 100, report
    assert ex.top[0]["node"] == node, report  # the largest error growth is there too
    order = next(r["order"] for r in ex.rows if r["node"] == node)
    assert all(r["rel_l2"] < 1e-5 for r in ex.rows if r["matched"] and r["order"] < order), report
    assert ex.faithful and ex.deployed is None  # fp32: exposing tensors changes nothing, no search needed


def test_an_intact_candidate_does_not_diverge(fp32_export):
    for runtime in ("ort", "ov"):
        outcome = run_explain(target_of(fp32_export, runtime), ExplainSettings(fixes=False), None)
        assert outcome.section["first_divergence"] is None, outcome.lines
        assert outcome.section["deployed_logits"]["top1_agree"] == 8
        assert outcome.section["compared"]["tensors"] >= outcome.section["compared"]["of"] - 2


def test_csv_plot_and_record_section(fp32_export, tmp_path):
    candidate = perturbed_export(fp32_export, tmp_path / "broken", "blocks.0.fc2.weight")
    outcome = run_explain(target_of(candidate, "ort"), ExplainSettings(threshold=1e-3), tmp_path / "out")
    data = outcome.section
    rows = list(csv.DictReader(open(data["files"]["csv"])))
    assert [r["tensor"] for r in rows if r["first_divergence"] == "True"] == ["blocks.0.fc2.out"]
    assert Path(data["files"]["plot"]).stat().st_size > 10_000
    json.dumps(data, allow_nan=False)  # the section is plain JSON
    assert data["status"] == "complete" and data["top_growth"][0]["node"] == "blocks.0.fc2"
    fix = data["suggested_fix"]
    assert fix["plans"][0]["names"] == ["blocks.0.fc2"] and fix["plans"][-1]["types"] == ["MatMul"]
    assert fix["trials"] == []
    assert "fp32" in fix["untested"]  # an fp32 candidate is not re-quantised


def test_reference_comes_from_the_manifest_source(fp32_export, tmp_path):
    from bench.explain.run import ExplainError

    candidate = perturbed_export(fp32_export, tmp_path / "broken", "head.fc.weight")
    artifact = Artifact.from_manifest(candidate)
    assert reference_of(artifact).model_path == (fp32_export.parent / "model.onnx").resolve()
    data = json.loads(candidate.read_text())
    data["source"] = {"manifest": str(tmp_path / "nowhere" / "model.onnx.json")}
    candidate.write_text(json.dumps(data))
    with pytest.raises(ExplainError, match="fp32 export it was built from is unusable"):
        reference_of(Artifact.from_manifest(candidate))


def test_known_openvino_bug_is_named_when_its_pattern_shows():
    """The ReduceMean -> BatchNorm int8 fusion: recognised from the deployed first divergence."""
    from bench.explain.compare import Explanation
    from bench.explain.graph import GraphIndex, TensorInfo
    from bench.explain.known import known_issues
    from bench.explain.search import DeployedSearch

    graph = GraphIndex({"m": TensorInfo("m", "ReduceMean.0", "ReduceMean", 0, 1, 0, "", ("x",), False),
                        "b": TensorInfo("b", "BatchNormalization.50", "BatchNormalization", 1, 2, 0, "", ("m",),
                                        False)}, ("b",), "x")
    first = {"tensor": "b", "node": "BatchNormalization.50", "op_type": "BatchNormalization",
             "runtime_layer": {"type": "Reduce", "precision": "i8", "layer": "ReduceMean.0",
                               "fused": ["ReduceMean.0", "BatchNormalization.50/fq_output_0"]}}
    ex = Explanation("ov-int8", "int8", 0.2, 8, [], None, [], {}, {}, {}, False,
                     DeployedSearch([], True, first, 1, 0.1), 2, 0, 2, {}, {})
    [issue] = known_issues(ex, graph)
    assert issue["node"] == "BatchNormalization.50" and "ov_reduce_bn_int8_repro.py" in issue["reproducer"]
    first["runtime_layer"]["precision"] = "f32"  # the same layers in float: not the bug
    assert known_issues(ex, graph) == []


def test_cli_refuses_runtimes_it_cannot_instrument(capsys):
    from bench.cli import main

    assert main(["explain", "--runtime", "paddle", "--model", "LeViT_128S"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: explain on paddle: Paddle is the reference") and "--against paddle" in err
    assert err.count("\n") == 1
    assert main(["explain", "--runtime", "tensorrt", "--model", "LeViT_128S"]) == 1
    assert "NVIDIA GPU" in capsys.readouterr().err
    assert main(["explain", "--runtime", "ort", "--model", "LeViT_128S", "--images", "0"]) == 2
    assert "--images must be a positive integer" in capsys.readouterr().err


def test_cli_resolves_the_reduced_precision_model_as_bench_does(tmp_path, capsys):
    """--model with --precision int8 explains the int8 model `python -m bench` would run: made on demand, or with
    --no-export the exact command that makes it (model, opset and variant, nothing left to guess)."""
    from bench.cli import main

    art = tmp_path / "art"
    assert main(["explain", "--runtime", "ov", "--model", "LeViT_128S", "--precision", "int8", "--no-export",
                 "--artifacts", str(art)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(f"run: python -m export --model LeViT_128S --opset 17 --out {art} --precision int8 "
                         "--runtime ov"), line
    assert not art.exists()


@pytest.mark.slow
def test_a_cell_that_fails_its_gates_records_where_the_drift_starts(fp32_export, tmp_path):
    """After the drift pass, a failed gate runs the explain; the record names the broken layer, and the
    report lists it with its plot."""
    from bench.cell import run_cell
    from bench.harness.measure import MeasureParams
    from bench.records import append_record, read_records
    from bench.report.build import build_report
    from bench.request import BenchRequest, Output
    from bench.request import Target as CellTarget
    from runtimes.base import RuntimeOptions

    candidate = perturbed_export(fp32_export, tmp_path / "broken", "blocks.1.fc2.weight")
    failed = {"passed": False, "precision": "fp32", "checks": [{"metric": "agreement", "value": 0.5,
                                                                 "threshold": 1.0, "passed": False}]}
    results = tmp_path / "results" / "runs.jsonl"
    request = BenchRequest("ort", CellTarget(manifest=str(candidate)), RuntimeOptions(batch=2, threads=1),
                           MeasureParams(0, 2, 0.0, 5.0), output=Output(str(results)))
    record = run_cell(request, drift_pass=lambda rt, art, req: ({"n": 8, "agreement": 0.5}, failed)).record
    assert record.status == "ok", record.error
    section = record.explain
    assert section["status"] == "complete" and section["first_divergence"]["node"] == "blocks.1.fc2", section
    assert (results.parent / section["files"]["plot"]).is_file()  # relative to the results folder
    append_record(results, record)
    assert read_records(results).valid()[0].explain["first_divergence"]["node"] == "blocks.1.fc2"
    report = build_report([results], tmp_path / "report").read_text()
    assert "## Where the drift starts" in report and "MatMul `blocks.1.fc2`" in report
    assert (tmp_path / "report" / "plots" / f"explain_{record.record_id}.png").is_file()


def test_a_cell_that_passes_its_gates_runs_no_explain(fp32_export, tmp_path):
    from bench.cell import run_cell
    from bench.harness.measure import MeasureParams
    from bench.request import BenchRequest, Output
    from bench.request import Target as CellTarget
    from runtimes.base import RuntimeOptions

    request = BenchRequest("ort", CellTarget(manifest=str(fp32_export)), RuntimeOptions(batch=2, threads=1),
                           MeasureParams(0, 2, 0.0, 5.0), output=Output(str(tmp_path / "r.jsonl")))
    record = run_cell(request, drift_pass=lambda rt, art, req: ({"n": 8}, {"passed": True})).record
    assert record.status == "ok" and record.explain is None
    assert np.isfinite(record.timing.latency("p50"))


class SplitCapture:
    """Instrumented run = a good model; deployed run and cut models = a broken one: a runtime whose fused
    (deployed) execution differs from its instrumented one, as OpenVINO's int8 LeViT head does."""

    def __init__(self, good, bad) -> None:
        self.good, self.bad = good, bad
        self.label, self.precision, self.names = "split", "fp32", good.names

    def run(self, batch):
        return self.good.run(batch)

    def deployed(self, images):
        return self.bad.deployed(images)

    def deploy_batch(self):
        return self.bad.deploy_batch()

    def values(self, names, batch):
        return self.good.values(names, batch)

    def probeable(self):
        return self.bad.probeable()

    def probe(self, names, batch):
        return self.bad.probe(names, batch)

    def runtime_layer(self, node):
        return None

    def __getattr__(self, name):  # forwards replay() when the broken capture has it
        if name == "replay" and hasattr(self.bad, "replay"):
            return self.bad.replay
        raise AttributeError(name)

    def describe(self):
        return {}


def split_explain(fp32_export: Path, tmp_path: Path, initializer: str, runtime: str):
    import onnx

    from bench.explain.compare import explain
    from bench.explain.graph import index_graph
    from bench.explain.ort import OrtCapture
    from bench.explain.ov import OvCapture

    good = fp32_export.parent / "model.onnx"
    bad = perturbed_export(fp32_export, tmp_path / "hidden", initializer).parent / "model.onnx"
    graph = index_graph(onnx.load(str(good)))
    make = (lambda p: OrtCapture(p, graph, threads=1)) if runtime == "ort" else \
        (lambda p: OvCapture(p, graph, threads=1, batch=8))
    images = np.random.default_rng(7).standard_normal((8, 4, 8, 8)).astype(np.float32)
    return explain(OrtCapture(good, graph, threads=1), SplitCapture(make(good), make(bad)), graph, images,
                   threshold=1e-3), graph


@pytest.mark.parametrize(("node", "initializer"), [("stem.bn", "stem.bn.scale"), ("head.fc", "head.fc.weight")])
def test_the_deployed_search_finds_what_instrumentation_hides(fp32_export, tmp_path, node, initializer):
    ex, graph = split_explain(fp32_export, tmp_path, initializer, "ort")
    assert ex.first is None and not ex.faithful  # the instrumented run sees nothing
    assert ex.deployed is not None and ex.deployed.first["node"] == node
    assert ex.deployed.first["growth"] > 10
    assert ex.deployed.probes <= 1 + 2 * len(graph.tensors).bit_length() + 2  # a search, not a sweep


@pytest.mark.slow
@pytest.mark.parametrize(("node", "initializer"), [("blocks.1.fc2", "blocks.1.fc2.weight"),
                                                   ("head.fc", "head.fc.weight")])
def test_the_openvino_search_replays_only_the_failing_block(fp32_export, tmp_path, node, initializer):
    ex, _ = split_explain(fp32_export, tmp_path, initializer, "ov")
    assert ex.deployed is not None and ex.deployed.first["node"] == node
    assert ex.deployed.replays > 0 and ex.deployed.first["measured_by"].startswith("replay from ")


@pytest.mark.slow
def test_ort_qdq_names_and_a_bad_quantisation_fixed_by_requantising(fp32_export, tmp_path):
    """An ORT int8 QDQ model with one badly ranged activation: the tool blames that quantisation (not the layer
    reading it), and re-quantising with its producer and consumer kept in float recovers the agreement."""
    import onnx
    from explain_models import coarsen_scale, derived, seeded_calibration

    from bench.explain import ort
    from bench.explain.fixes import ort_int8_qdq
    from bench.explain.graph import index_graph, logit_agreement
    from bench.explain.run import pick_images

    calibration = seeded_calibration(tmp_path)
    folder = tmp_path / "int8"
    plain = ort_int8_qdq(fp32_export.parent / "model.onnx", np.load(calibration), tmp_path / "plain.onnx")
    folder.mkdir()
    onnx.save(coarsen_scale(onnx.load(str(plain)), "blocks.0.act.out", 40.0), str(folder / "model.onnx"))
    manifest = derived(fp32_export, folder, "model.onnx", "int8", reduced_precision={
        "method": "onnxruntime quantize_static (QDQ)", "parameters": {"per_channel": True},
        "calibration": {"file": str(calibration), "count": 16}})
    graph = index_graph(onnx.load(str(fp32_export.parent / "model.onnx")))
    nmap = ort.map_ort_names(onnx.load(str(folder / "model.onnx")), graph)
    assert nmap.quantized["blocks.0.act.out_DequantizeLinear_Output"] == "blocks.0.act.out"
    assert nmap.values["logits_QuantizeLinear_Input"] == "logits"  # a quantised graph output's rename
    outcome = run_explain(target_of(manifest, "ort", "int8"), ExplainSettings(), tmp_path / "out")
    report, fix = "\n".join(outcome.lines), outcome.section["suggested_fix"]
    first = outcome.section["first_divergence_instrumented"]
    assert (first["stage"], first["tensor"]) == ("quantized", "blocks.0.act.out"), report
    fc2 = next(r for r in outcome.explanation.rows if r["tensor"] == "blocks.0.fc2.out")
    assert fc2["growth"] < 2, report  # the MatMul reading the quantised tensor only carries the error on
    stem = next(r for r in outcome.explanation.rows if r["tensor"] == "stem.act.out")
    assert not stem["matched"]  # the quantiser dropped that Relu: its name now holds the unclipped value
    deployed = outcome.section["first_divergence"]  # QLinear kernels differ from the simulated Q/DQ run
    if deployed["run"].startswith("deployed"):
        assert deployed["node"] == "blocks.0.fc2" and deployed["reads_quantized"] == ["blocks.0.act.out"], report
    trial = next(t for t in fix["trials"] if set(t["ignored_names"]) == {"blocks.0.act", "blocks.0.fc2"})
    assert trial["method"] == "ort-qdq"
    images, _ = pick_images(Artifact.from_manifest(fp32_export), 64)
    reference = ort.deployed_logits(fp32_export.parent / "model.onnx", images)
    before = logit_agreement(reference, ort.deployed_logits(folder / "model.onnx", images))
    assert trial["n"] == before["n"] and trial["top1_agree"] > before["top1_agree"], (before, trial)
    assert isinstance(trial["passes_gates"], bool) and Path(trial["model"]).is_file()
    # A sweep cell's explain keeps no fix models (hundreds of MB per sweep): same trials, nothing left on disk.
    quiet = run_explain(target_of(manifest, "ort", "int8"), ExplainSettings(keep_fix_models=False), tmp_path / "cell")
    assert [t["model"] for t in quiet.section["suggested_fix"]["trials"]] == [None] * len(fix["trials"])
    assert not (tmp_path / "cell" / "fixes").exists() and (tmp_path / "cell").is_dir()


@pytest.mark.slow
def test_nncf_int8_ir_through_the_cli(fp32_export, tmp_path):
    """An NNCF int8 IR (static batch 8) made to the export contract, explained by `python -m bench explain`:
    FakeQuantize outputs (unnamed) are matched through the tensor they read; explain.json, CSV and plot."""
    from conftest import ROOT, run_module
    from explain_models import derived, seeded_calibration

    from bench.explain.fixes import nncf_int8

    calibration = seeded_calibration(tmp_path)
    folder = tmp_path / "int8-ov"
    xml = nncf_int8(fp32_export.parent / "model.onnx", np.load(calibration), folder / "model.xml", batch=8)
    manifest = derived(fp32_export, folder, xml.name, "int8", fmt="openvino-ir", batch=8, reduced_precision={
        "method": "nncf", "parameters": {}, "calibration": {"file": str(calibration)}})
    out = tmp_path / "explain"
    proc = run_module("bench", "explain", "--runtime", "ov", "--manifest", str(manifest), "--images", "6",
                      "--search", "always", "--out", str(out), "--threads", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[ov-int8]" in proc.stdout and "explain took" in proc.stdout and ROOT.is_dir()
    data = json.loads((out / "explain.json").read_text())
    assert data["compared"]["quantized_views"] > 0 and data["settings"]["deployed_batch"] == 8
    assert data["settings"]["instrumented_batch"] == 2 and data["deployed_logits"]["n"] == 6
    assert data["deployed_search"]["boundaries"]  # the search ran on the deployed (padded) batch
    assert data["deployed_logits"]["cosine_min"] > 0.9 and data["suggested_fix"]["untested"] == "nothing diverged"
    assert (out / "layers.csv").is_file() and (out / "error_along_depth.png").is_file()


@pytest.mark.slow
def test_the_openvino_reducemean_batchnorm_reproducer_runs(tmp_path):
    """benchmarks/ov_reduce_bn_int8_repro.py builds its own IR; exit 1 while OpenVINO has the bug. If this
    fails because the bug is gone, update bench/explain/known.py and the README."""
    from conftest import run_module

    proc = run_module("benchmarks.ov_reduce_bn_int8_repro", cwd=tmp_path)  # HOME too: OpenVINO writes there
    assert "deployed (fused) vs numpy" in proc.stdout, proc.stderr
    assert proc.returncode == 1 and "BUG PRESENT" in proc.stdout, proc.stdout
