"""bench.yaml loading and validation: errors name the key and the allowed values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.config import BenchConfig, ConfigError, config_from_dict, expand_model_patterns, load_config
from bench.sweep.plan import plan, sweep_id
from export.models import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_repo_bench_yaml_has_the_documented_defaults():
    cfg = load_config(ROOT / "bench.yaml")
    assert cfg.export.batch == "dynamic" and cfg.export.weights == "seeded"
    assert cfg.sweep.drift_preprocess == "eval"
    m = cfg.measure
    assert (m.warmup, m.iterations, m.min_duration_s, m.max_duration_s) == (10, 50, 2.0, 30.0)
    assert (m.scenario, m.requests) == ("latency", None)
    assert cfg.gates["fp32"] == {"agreement": 1.0, "max_abs_diff": 1e-4}
    assert cfg.gates["fp16"] == {"agreement": 0.99, "cosine": 0.999}
    assert cfg.gates["int8"] == {"agreement": 0.95, "cosine": 0.99}
    assert cfg.results == Path("results/runs.jsonl")


def test_the_default_sweep_is_small_and_the_full_matrix_one_file_away():
    """`python -m bench sweep` is something a newcomer finishes in minutes: two models at one opset, fp32 (and
    the ov bf16 hint), latency only; bench-full.yaml is the full matrix with every other setting the same, so
    both are one sweep (one id) and the full one resumes the small one."""
    small, full = load_config(ROOT / "bench.yaml"), load_config(ROOT / "bench-full.yaml")
    cells = plan(small, sweep_id(small), Path("runs.jsonl"))
    assert len(cells) == 16 and len({(c.target.model, c.target.opset) for c in cells}) == 2
    assert small.export.models == small.sweep.models and small.export.opsets == small.sweep.opsets == (17,)
    assert full.export.models == full.sweep.models == tuple(MODELS) and full.sweep.opsets == (13, 17)
    assert full.sweep.precisions == {"paddle": ("fp32",), "ort": ("fp32", "int8"), "ov": ("fp32", "bf16", "int8")}
    assert full.sweep.batches == (1, 8) and full.sweep.scenarios == ("latency", "throughput")
    assert len(plan(full, sweep_id(full), Path("runs.jsonl"))) == 384
    assert sweep_id(small) == sweep_id(full)
    for section in ("measure", "gates", "results", "artifacts"):
        assert getattr(small, section) == getattr(full, section), section
    assert dataclasses.replace(small.export, models=(), opsets=()) == dataclasses.replace(full.export, models=(),
                                                                                           opsets=())
    assert {c.target.model for c in cells} <= set(full.sweep.models)


def test_config_is_frozen():
    cfg = config_from_dict({})
    assert cfg == BenchConfig(source="bench.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.measure.warmup = 3  # type: ignore[misc]


def test_overrides_and_aliases():
    cfg = config_from_dict({"sweep": {"runtimes": ["onnxruntime", "openvino"], "models": ["MobileViT*"],
                                      "precisions": {"openvino": ["bf16"]}},
                            "measure": {"warmup": 0, "scope": "end2end", "threads": 2}})
    assert cfg.sweep.runtimes == ("ort", "ov")
    assert cfg.sweep.models == ("MobileViT_XXS", "MobileViT_XS", "MobileViT_S")
    assert cfg.sweep.precisions_for("ov") == ("bf16",) and cfg.sweep.precisions_for("ort") == ("fp32",)
    assert cfg.measure.warmup == 0 and cfg.measure.scope == "end2end" and cfg.measure.threads == 2


@pytest.mark.parametrize("data, message", [
    ({"sweep": {"runtimes": ["paddle", "ort", "tensorrtx"]}},
     "bench.yaml: sweep.runtimes[2]: unknown runtime 'tensorrtx'; allowed: ort, ov, paddle, trt"),
    ({"sweep": {"runtimes": [None]}}, 'write "null" in quotes'),
    ({"sweep": {"models": ["LeViT_128S", "ResNet50"]}},
     "bench.yaml: sweep.models[1]: unknown model 'ResNet50'; known models: LeViT_128S, LeViT_128"),
    ({"export": {"models": "LeViT_128S"}}, "bench.yaml: export.models: expected a list"),
    ({"export": {"opsets": [13, 22]}}, "bench.yaml: export.opsets[1]: invalid opset 22; allowed: 7..21"),
    ({"export": {"opsets": []}}, "bench.yaml: export.opsets: must not be empty"),
    ({"export": {"batch": 0}}, "bench.yaml: export.batch: invalid batch 0; allowed: dynamic"),
    ({"sweep": {"batches": [1, 0]}}, "bench.yaml: sweep.batches[1]: expected an integer >= 1, got 0"),
    ({"sweep": {"precisions": {"ort": ["fp32", "bf16"]}}},
     "bench.yaml: sweep.precisions.ort[1]: runtime 'ort' does not support precision 'bf16'; allowed: fp32, fp16, "
     "int8"),
    ({"sweep": {"precisions": {"onnx": ["fp32"]}}}, "sweep.precisions.onnx: unknown runtime 'onnx'"),
    ({"measure": {"warmup": -1}}, "bench.yaml: measure.warmup: expected an integer >= 0, got -1"),
    ({"measure": {"iterations": 2.5}}, "measure.iterations: expected an integer >= 1"),
    ({"measure": {"scope": "wall"}}, "measure.scope: unknown scope 'wall'; allowed: compute, end2end"),
    ({"measure": {"scenario": "offline"}},
     "bench.yaml: measure.scenario: unknown scenario 'offline'; allowed: latency, throughput"),
    ({"measure": {"requests": 0}}, "bench.yaml: measure.requests: expected an integer >= 1, got 0"),
    ({"sweep": {"scenarios": ["latency", "server"]}},
     "bench.yaml: sweep.scenarios[1]: unknown scenario 'server'; allowed: latency, throughput"),
    ({"sweep": {"scenarios": []}}, "bench.yaml: sweep.scenarios: must not be empty"),
    ({"sweep": {"drift": {"preprocess": "train"}}},
     "bench.yaml: sweep.drift.preprocess: unknown preprocessing pipeline 'train'; allowed: eval, infer"),
    ({"sweep": {"requests": [2, -1]}}, "bench.yaml: sweep.requests[1]: expected an integer >= 1, got -1"),
    ({"measure": {"min_duration_s": 5, "max_duration_s": 1}}, "measure.max_duration_s: 1.0 is below"),
    ({"measure": {"iterrations": 5}},
     "bench.yaml: measure.iterrations: unknown key; allowed: warmup, iterations"),
    ({"gates": {"fp64": {"agreement": 1}}},
     "bench.yaml: gates.fp64: unknown precision 'fp64'; allowed: fp32"),
    ({"gates": {"fp16": {"agreemnt": 1}}},
     "bench.yaml: gates.fp16.agreemnt: unknown key; allowed: agreement"),
    ({"gates": {"fp16": {"cosine": 1.5}}}, "bench.yaml: gates.fp16.cosine: 1.5 is outside [0, 1]"),
    ({"gates": {"fp16": {"max_abs_diff": "small"}}}, "gates.fp16.max_abs_diff: expected a number >= 0"),
    ({"gates": {"fp16": [0.99]}}, "bench.yaml: gates.fp16: expected a mapping, got list"),
    ({"sweeps": {}}, "bench.yaml: sweeps: unknown key; allowed: export, sweep, measure, gates, results"),
    ([1, 2], "bench.yaml: expected a mapping, got list"),
])
def test_errors_name_the_key_and_allowed_values(data, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_yaml_errors_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sweep:\n  runtimes: [ort\n  batches: [1]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:3:") and "not valid YAML" in str(info.value)
    (tmp_path / "tab.yaml").write_text("measure:\n\twarmup: 2\n")
    with pytest.raises(ConfigError, match=r"tab\.yaml:2:1: not valid YAML"):
        load_config(tmp_path / "tab.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_value_errors_name_the_line(tmp_path):
    (tmp_path / "e.yaml").write_text("# comment\nmeasure:\n  warmup: -2\n")
    with pytest.raises(ConfigError, match=r"^e\.yaml:3: measure\.warmup: expected an integer >= 0"):
        load_config(tmp_path / "e.yaml")
    (tmp_path / "r.yaml").write_text("sweep:\n  runtimes:\n    - ort\n    - tensorrtx\n")
    with pytest.raises(ConfigError, match=r"^r\.yaml:4: sweep\.runtimes\[1\]: unknown runtime 'tensorrtx'"):
        load_config(tmp_path / "r.yaml")


def test_expand_model_patterns():
    assert expand_model_patterns(["LeViT_128*"]) == ("LeViT_128S", "LeViT_128")
    assert expand_model_patterns(["MobileViT_S", "MobileViT_S"]) == ("MobileViT_S",)
    with pytest.raises(ConfigError, match="unknown model 'Nope'"):
        expand_model_patterns(["Nope"])


@pytest.mark.parametrize("int8, message", [
    ({"calibration_size": 10}, "bench.yaml: export.int8.calibration_size: expected an integer >= 32, got 10"),
    ({"max_drop": 1.5}, "bench.yaml: export.int8.max_drop: expected a top-1 agreement drop between 0 and 1"),
    ({"calibration": ""}, "bench.yaml: export.int8.calibration: expected a non-empty string"),
    ({"preset": "mixed"}, "bench.yaml: export.int8.preset: unknown key; allowed: calibration, calibration_size"),
])
def test_bad_int8_recipe_is_named(int8, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"export": {"int8": int8}})
    assert message in str(err.value)


def test_int8_recipe_applies_to_int8_cells_of_ov_and_ort_only(tmp_path):
    from bench.request import Target, with_int8_recipe
    from bench.sweep.plan import plan, sweep_id

    recipe = {"calibration": "calib", "calibration_size": 40, "max_drop": 0.02}
    cfg = config_from_dict({"export": {"int8": recipe}, "sweep": {
        "models": ["LeViT_128S"], "opsets": [17], "batches": [1], "scenarios": ["latency"],
        "runtimes": ["paddle", "ort", "ov"], "precisions": {"ort": ["fp32", "int8"], "ov": ["bf16", "int8"]}}})
    assert cfg.export.int8.asked() == recipe
    absolute = str(Path("calib").resolve())  # cells run in child processes: the path is made absolute
    made = {(c.runtime_name, c.runtime.precision): c.target.int8_recipe.asked()
            for c in plan(cfg, sweep_id(cfg), tmp_path / "r.jsonl")}
    assert made == {("paddle", "fp32"): {}, ("ort", "fp32"): {}, ("ov", "bf16"): {},
                    ("ort", "int8"): {"calibration": absolute, "calibration_size": 40},
                    ("ov", "int8"): {"calibration": absolute, "calibration_size": 40, "max_drop": 0.02}}
    assert sweep_id(cfg) != sweep_id(config_from_dict({"sweep": {"models": ["LeViT_128S"]}}))
    # python -m bench: the command line's flags win over bench.yaml's, field by field
    flagged = with_int8_recipe(Target(model="LeViT_128S", calibration_size=64), "openvino", "int8", cfg.export.int8)
    assert flagged.int8_recipe.asked() == {"calibration": absolute, "calibration_size": 64, "max_drop": 0.02}
    assert with_int8_recipe(Target(manifest="m.onnx.json"), "ov", "int8", cfg.export.int8).int8_recipe.asked() == {}
