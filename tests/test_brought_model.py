"""A brought model as a first-class one: a small PP-LCNet-style classifier saved with ``paddle.jit.save`` here,
exported with its PaddleClas config (``tests/data/paddleclas/TinyLCNet.yaml``), then drift on a real image folder
with labels, int8 for OpenVINO and ONNX Runtime calibrated on the bundled images, explain and sweep cells through
``--manifest``; and every hint it is given, run as printed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import run_module

from bench.records import read_records

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "paddleclas" / "TinyLCNet.yaml"
CALIBRATION = ROOT / "data" / "imagenet-calib-125"
FAST = ["--warmup", "1", "--iterations", "5", "--duration", "0"]
# Gates a random network passes, so that no failed gate starts the (minutes-long) explain of a cell.
BENCH_YAML = """
gates:
  fp32: {agreement: 1.0, max_abs_diff: 1.0e-3}
  int8: {agreement: 0.0}
measure: {warmup: 1, iterations: 5, min_duration_s: 0, max_duration_s: 5}
sweep:
  models: []
  manifests: [MANIFEST]
  runtimes: [ort]
  precisions: {ort: [fp32, int8]}
  batches: [1]
  scenarios: [latency]
  drift: {data: export}
"""


def save_tiny_lcnet(folder: Path) -> Path:
    """PP-LCNet's shape in miniature (conv-BN-hardswish stem, a depthwise-separable block with squeeze-excite,
    pooling, a 1x1 "last conv", a 1000-class head), saved for inference as PaddleClas's export_model does."""
    import paddle
    from paddle import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2D(cin, cout, kernel, stride, kernel // 2, groups=groups, bias_attr=False),
                             nn.BatchNorm2D(cout), nn.Hardswish())

    class SqueezeExcite(nn.Layer):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.pool, self.reduce = nn.AdaptiveAvgPool2D(1), nn.Conv2D(channels, channels // 4, 1)
            self.expand, self.gate = nn.Conv2D(channels // 4, channels, 1), nn.Hardsigmoid()

        def forward(self, x):
            return x * self.gate(self.expand(nn.functional.relu(self.reduce(self.pool(x)))))

    class TinyLCNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 8, 3, 2, groups=8), SqueezeExcite(8),
                                          conv_bn(8, 16, 1, 1), nn.AdaptiveAvgPool2D(1))
            self.last_conv, self.act, self.fc = nn.Conv2D(16, 32, 1), nn.Hardswish(), nn.Linear(32, 1000)

        def forward(self, x):
            return self.fc(self.act(self.last_conv(self.features(x))).flatten(1))

    paddle.seed(7)
    model = TinyLCNet()
    model.eval()
    spec = [paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")]
    paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), str(folder / "inference"))
    return folder / "inference.json"


@pytest.fixture(scope="module")
def brought(tmp_path_factory) -> tuple[Path, Path]:
    """(fp32 manifest, working folder with the bench.yaml above): the export of the saved model."""
    work = tmp_path_factory.mktemp("brought")
    model_file = save_tiny_lcnet(work)
    proc = run_module("export", "--paddle-model", str(model_file), "--model", "TinyLCNet", "--preprocess",
                      str(CONFIG), "--opset", "17", "--out", str(work / "art"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = next((work / "art").rglob("model.onnx.json"))
    (work / "bench.yaml").write_text(BENCH_YAML.replace("MANIFEST", str(manifest)))
    return manifest, work


def bench(work: Path, *args: str):
    return run_module("bench", *args, "--results", str(work / "runs.jsonl"), cwd=work)


def error_line(proc) -> str:
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return line


def run_hint(command: str, work: Path):
    """A printed ``python -m ...`` command, run as printed (with this interpreter)."""
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    return run_module(words[2], *words[3:], cwd=work)


def test_the_export_records_the_configs_preprocessing_and_checks_real_images(brought):
    manifest_path, _ = brought
    manifest = json.loads(manifest_path.read_text())
    assert manifest["input_shape"] == [3, 32, 32]  # what the config's crop makes: no --input-shape needed
    preprocess = manifest["preprocess"]
    assert preprocess["source"] == f"{CONFIG}: DataLoader.Eval.dataset.transform_ops"
    assert (preprocess["pipeline"], preprocess["resize_short"], preprocess["crop"]) == ("eval", 36, 32)
    images = manifest["parity"]["images"]
    assert images["passed"] and images["n"] == 44 and manifest["reference"]["images"]["count"] == 44


def test_drift_on_a_real_image_folder_with_labels(brought):
    manifest, work = brought
    proc = bench(work, "--runtime", "ort", "--manifest", str(manifest), *FAST, "--drift", "--data",
                 str(CALIBRATION))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_records(work / "runs.jsonl").records[-1].record
    drift = record.drift
    assert drift["n"] == 125 and drift["labelled"] and drift["reference_source"] == "paddle inference fp32"
    assert drift["data"]["preprocess"]["source"].startswith(str(CONFIG)) and record.gates["passed"]


def test_accuracy_on_labelled_images(brought):
    manifest, work = brought
    proc = run_module("bench", "accuracy", "--runtime", "ort", "--manifest", str(manifest), "--data",
                      str(ROOT / "data" / "imagenet-val-44"), "--quiet", "--results", str(work / "acc.jsonl"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TinyLCNet on ort/fp32, eval preprocessing, 44 images" in proc.stdout
    assert "untrained" not in proc.stdout and "--weights" not in proc.stdout  # nothing a brought model cannot do
    assert json.loads((work / "acc.jsonl").read_text())["preprocess"]["source"].startswith(str(CONFIG))


def test_bench_makes_a_reduced_precision_model_of_the_manifest_on_demand(brought):
    manifest, work = brought
    proc = bench(work, "--runtime", "ort", "--manifest", str(manifest), "--precision", "fp16", *FAST, "--drift")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_records(work / "runs.jsonl").records[-1].record
    assert record.model.precision == "fp16" and Path(record.model.manifest).parent.name.endswith("-fp16")
    assert record.drift["n"] == 44


def test_int8_for_openvino_through_the_printed_commands_then_explain(brought):
    manifest, work = brought
    asked = ["--runtime", "ov", "--manifest", str(manifest), "--precision", "int8", *FAST]
    line = error_line(bench(work, *asked, "--no-export"))
    command = line.split("; run: ", 1)[1]
    assert command == f"python -m export --manifest {manifest.resolve()} --precision int8 --runtime ov"
    assert runtime_hint(manifest) == command  # the OpenVINO adapter names the same command
    made = run_hint(command, work)
    assert made.returncode == 0 and "int8-ov" in made.stdout, made.stderr[-3000:]
    proc = bench(work, *asked, "--no-export", "--drift")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_records(work / "runs.jsonl").records[-1].record
    calibration = record.model.extra["reduced_precision"]["calibration"]
    assert record.model.precision == "int8" and calibration["folder"] == str(CALIBRATION) and calibration["size"] == 125
    assert record.drift["n"] == 44 and record.drift["data"]["preprocess"]["source"].startswith(str(CONFIG))
    assert record.drift["reference_source"] == "export reference (paddle inference, no IR optimisation, fp32, CPU)"
    explained = run_module("bench", "explain", "--runtime", "ov", "--manifest", str(manifest), "--precision", "int8",
                           "--images", "4", "--no-fix", "--search", "never", "--out", str(work / "explain"), cwd=work)
    assert explained.returncode == 0, explained.stderr[-3000:]
    assert json.loads((work / "explain" / "explain.json").read_text())["precision"] == "int8"


def runtime_hint(manifest: Path) -> str:
    """The command OpenVINO's adapter gives when asked int8 of the fp32 model."""
    from core.artifact import Artifact
    from runtimes import get_runtime
    from runtimes.base import RuntimeOptions, SilentChangeError

    runtime = get_runtime("ov")(RuntimeOptions(precision="int8", batch=1))
    with pytest.raises(SilentChangeError) as info:
        runtime.load(Artifact.from_manifest(manifest))
    runtime.close()
    return re.search(r"\((python -m export .*?) makes it;", str(info.value)).group(1)


def test_a_sweep_of_the_manifest_makes_and_runs_its_int8_onnx_runtime_cells(brought):
    manifest, work = brought
    results = work / "sweep.jsonl"
    proc = run_module("bench", "sweep", "--config", "bench.yaml", "--results", str(results), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r.record.runtime.precision: r.record for r in read_records(results).records}
    assert set(records) == {"fp32", "int8"} and all(r.status == "ok" for r in records.values())
    int8 = records["int8"]
    assert int8.model.name == "TinyLCNet" and Path(int8.model.manifest).parent.name.endswith("-int8-ort")
    assert int8.model.extra["reduced_precision"]["calibration"]["folder"] == str(CALIBRATION)
    assert int8.drift["n"] == 44  # on the export's images, through the config's pipeline


def test_a_model_brought_without_preprocessing_is_told_to_pass_its_config(tmp_path):
    """Exported without its config, it gets synthetic drift only; int8 and real-image drift say what to pass, and
    passing it works."""
    model_file = save_tiny_lcnet(tmp_path)
    proc = run_module("export", "--paddle-model", str(model_file), "--model", "TinyLCNet", "--input-shape", "3,32,32",
                      "--opset", "17", "--out", str(tmp_path / "art"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = next((tmp_path / "art").rglob("model.onnx.json"))
    assert json.loads(manifest.read_text())["preprocess"] is None
    int8 = run_module("export", "--manifest", str(manifest), "--precision", "int8", "--runtime", "ort", cwd=tmp_path)
    assert int8.returncode == 2 and "export it with --preprocess CONFIG.yaml" in error_line(int8)
    asked = ["--runtime", "ort", "--manifest", str(manifest), *FAST, "--data", str(ROOT / "data" / "imagenet-val-44")]
    refused = bench(tmp_path, *asked)
    assert refused.returncode == 2 and "pass --preprocess CONFIG.yaml" in error_line(refused)
    proc = bench(tmp_path, *asked, "--preprocess", str(CONFIG))
    assert proc.returncode == 0, proc.stderr[-3000:]
    drift = read_records(tmp_path / "runs.jsonl").records[-1].record.drift
    assert drift["n"] == 44 and drift["labelled"] and drift["reference_source"] == "paddle inference fp32"
