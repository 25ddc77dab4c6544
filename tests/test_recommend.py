"""``bench recommend`` on synthetic records with known answers: the choice under budgets, ties within noise,
drift intervals that overlap a budget, everything rejected, a load-flagged winner, untrained weights, screening
records of ``bench tune``; the commands it prints; bad input (one line, exit 2). No paddle, no export."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import call_main, run_module
from test_report import record, write

from bench.budgets import BudgetError, Budgets
from bench.recommend.commands import export_command, run_command
from bench.records import read_records
from bench.report.choice import recommend
from bench.report.judge import drop_of, screening_run_id

ROOT = Path(__file__).resolve().parents[1]


def config(runtime="ort", precision="fp32", p50=5.0, agreement=1.0, n=1000, cv=0.02, labelled=False, trained=True,
           threads=None, contended=False, **kw):
    """A record of one configuration: p90 = 1.1 x p50; agreement with Paddle on ``n`` images (its Wilson interval
    recorded); weights trained or not; timing flagged as contended or not."""
    r = record(runtime=runtime, precision=precision, p50=p50, cv=cv, agreement=agreement if labelled else None, **kw)
    r.params.threads = threads
    r.model.weights["trained"] = trained
    if not labelled and agreement is not None and r.status == "ok":
        from core.metrics import wilson_interval

        k = round(agreement * n)
        r.drift = {"n": n, "agreement": k / n, "agreement_ci": list(wilson_interval(k, n)), "labelled": False,
                   "finite": True}
    r.machine = {"contended": contended, "contention": ["other processes used 0.9 of a core"] if contended else []}
    return r


def choose(tmp_path: Path, records, **budgets):
    path = write(tmp_path / "runs.jsonl", records)
    recs = recommend(read_records(path).records, Budgets(**budgets), model="LeViT_128S")
    assert len(recs) == 1
    return recs[0]


def labels(rec) -> list[str]:
    return [j.label for j in rec.rejected]


def test_best_qualifying_on_the_objective_and_why_the_better_ones_were_rejected(tmp_path):
    rec = choose(tmp_path, [
        config("ov", "int8", p50=2.0, agreement=0.95),  # fastest: drops up to ~6.3 points
        config("ort", "int8", p50=2.5, status="error", message="quantizer failed"),
        config("ov", "fp32", p50=4.0, agreement=1.0),  # the choice: agreement 1000/1000, bound 0.38 points
        config("ort", "fp32", p50=5.0, agreement=1.0),  # slower: qualifies, not shown as rejected
        config("paddle", "fp32", p50=12.0, agreement=None),  # the reference: drop 0, but over the latency budget
    ], max_latency_ms=10, max_drop=1.0)
    assert rec.choice.label == "ov fp32 b1 opset 17"
    assert rec.choice.latency == pytest.approx(4.4)  # judged on p90, not p50
    assert labels(rec) == ["ov int8 b1 opset 17", "ort int8 b1 opset 17"]
    why = {j.label: [r.kind for r in j.rejections] for j in rec.judged}
    assert why["ov int8 b1 opset 17"] == ["drift interval above budget"]
    assert why["ort int8 b1 opset 17"] == ["error"]
    assert why["paddle fp32 b1 opset 17"] == ["latency over budget"]
    assert rec.tied == [] and not rec.untrained


def test_throughput_objective_under_a_latency_ceiling(tmp_path):
    rec = choose(tmp_path, [
        config("ov", batch=8, p50=20.0),  # 400 images/s, p90 22 ms: over the ceiling
        config("ov", p50=4.0),  # 250 images/s
        config("ort", p50=5.0),  # 200 images/s
    ], objective="throughput", max_latency_ms=10)
    assert rec.choice.label == "ov fp32 b1 opset 17" and rec.choice.throughput == pytest.approx(250)
    assert [r.kind for r in rec.rejected[0].rejections] == ["latency over budget"]


def test_a_tie_within_noise_goes_to_the_smaller_drift_bound(tmp_path):
    rec = choose(tmp_path, [
        config("ov", "bf16", p50=4.0, cv=0.05, agreement=0.996),  # fastest, but 4 flips in 1000
        config("ov", "fp32", p50=4.1, cv=0.05, agreement=1.0),  # 2.5 % slower: inside a 5 % CV
        config("ort", "fp32", p50=8.0, cv=0.05, agreement=1.0),  # clearly slower: not tied
    ], max_latency_ms=10, max_drop=2.0)
    assert rec.choice.label == "ov fp32 b1 opset 17"
    assert [j.label for j in rec.tied] == ["ov bf16 b1 opset 17"]
    assert rec.rejected == []
    # The same two with a tight noise band are told apart: the faster one wins.
    rec = choose(tmp_path / "tight", [config("ov", "bf16", p50=4.0, cv=0.001, agreement=0.996),
                                      config("ov", "fp32", p50=4.1, cv=0.001, agreement=1.0)],
                 max_latency_ms=10, max_drop=2.0)
    assert rec.choice.label == "ov bf16 b1 opset 17" and rec.tied == []


def test_an_interval_overlapping_the_budget_is_rejected(tmp_path):
    # 990/1000 agree: a 1.0 point drop, but the interval reaches 1.83 points: over a 1.5 point budget.
    rec = choose(tmp_path, [config("ov", "int8", p50=2.0, agreement=0.99), config("ov", p50=4.0)],
                 max_latency_ms=10, max_drop=1.5)
    int8 = rec.rejected[0]
    assert int8.drop.value == pytest.approx(1.0) and 1.5 < int8.drop.upper < 2.0
    assert rec.choice.label == "ov fp32 b1 opset 17"


def test_labels_judge_drift_when_the_records_have_them(tmp_path):
    labelled = config("ov", "int8", p50=2.0, agreement=0.9, labelled=True, top1=0.752, ref=0.76)
    unlabelled = config("ov", "int8", p50=2.0, agreement=0.9)
    top1, agree = drop_of(_cell(tmp_path, labelled)), drop_of(_cell(tmp_path / "u", unlabelled))
    # top1_delta = -0.008 with the interval [-0.018, 0.002]: the drop is 0.8 points, at most 1.8
    assert (top1.basis, top1.value, top1.upper) == ("top-1 on labels", pytest.approx(0.8), pytest.approx(1.8))
    assert agree.basis == "agreement with Paddle" and agree.value == pytest.approx(10.0)


def _cell(tmp_path: Path, r):
    from bench.report.results import select_cells

    tmp_path.mkdir(exist_ok=True)
    return select_cells(read_records(write(tmp_path / "one.jsonl", [r])).records)[0]


def test_nothing_qualifies_says_which_budget_bound(tmp_path):
    rec = choose(tmp_path, [config("ov", p50=4.0, agreement=1.0, n=44), config("ort", p50=5.0, agreement=1.0, n=44)],
                 max_latency_ms=10, max_drop=0.5)
    assert rec.choice is None and len(rec.rejected) == 2
    assert "the drift budget alone rejects 2 configuration(s)" in rec.binding
    assert "44 images cannot bound a drop below 8.03 points" in rec.binding  # the Wilson floor of 44/44
    rec = choose(tmp_path / "lat", [config("ov", p50=4.0), config("ort", p50=5.0)], max_latency_ms=3)
    assert rec.binding.startswith("the latency budget alone rejects 2") and "p90 4.4 ms (ov fp32" in rec.binding


def test_a_load_flagged_winner_is_rejected_and_the_next_one_chosen(tmp_path):
    rec = choose(tmp_path, [config("ov", p50=2.0, contended=True), config("ort", p50=5.0)], max_latency_ms=10)
    assert rec.choice.label == "ort fp32 b1 opset 17"
    assert rec.rejected[0].rejections[0].kind == "load-flagged timing"
    assert "0.9 of a core" in rec.rejected[0].rejections[0].detail


def test_untrained_weights_give_a_banner_or_are_rejected_beside_trained_ones(tmp_path):
    rec = choose(tmp_path, [config("ov", p50=2.0, trained=False), config("ort", p50=5.0, trained=False)],
                 max_latency_ms=10)
    assert rec.untrained and rec.choice.label == "ov fp32 b1 opset 17"
    rec = choose(tmp_path / "mixed", [config("ov", p50=2.0, trained=False, weights="seeded"),
                                      config("ort", p50=5.0, trained=True)], max_latency_ms=10)
    assert not rec.untrained and rec.choice.label == "ort fp32 b1 opset 17"
    assert rec.rejected[0].rejections[0].kind == "untrained weights"


def test_screening_records_of_tune_never_win(tmp_path):
    screened = config("ov", "bf16", p50=1.0)
    screened.run_id = screening_run_id("tune-0123456789", 0)
    full = config("ov", p50=4.0)
    rescreened = config("ov", p50=3.0, ts="2026-02-01T00:00:00Z")  # a later screening of the measured config
    rescreened.run_id = screening_run_id("tune-0123456789", 1)
    rec = choose(tmp_path, [screened, full, rescreened], max_latency_ms=10)
    assert rec.choice.latency == pytest.approx(4.4)  # the full measurement, not the later short one
    assert rec.rejected[0].label == "ov bf16 b1 opset 17" and rec.rejected[0].rejections[0].kind == "screening only"


def test_a_recommendation_per_host_and_target_selects_one(tmp_path):
    path = write(tmp_path / "runs.jsonl", [config("ov", p50=4.0, host="a"), config("ort", p50=3.0, host="b")])
    records = read_records(path).records
    recs = recommend(records, Budgets(max_latency_ms=10), model="LeViT_128S")
    assert sorted((r.where, r.choice.label) for r in recs) == [("a", "ov fp32 b1 opset 17"),
                                                                ("b", "ort fp32 b1 opset 17")]
    assert [r.where for r in recommend(records, Budgets(max_latency_ms=10), "LeViT_128S", where="b")] == ["b"]


def test_commands_rebuild_the_configuration(tmp_path):
    r = config("ov", "int8", p50=3.0, threads=2, weights="official+optimize=gemm+calibration_size=64", batch=8)
    r.model.manifest = "/data/art/LeViT_128S/official/opset17-bdyn-opt-gemm-int8-ov/model.onnx.json"
    r.runtime.options_asked = {"extra": {"streams": 2}}
    cell = _cell(tmp_path, r)
    assert export_command(cell) == ("python -m export --model LeViT_128S --opset 17 --weights official --optimize gemm "
                                    "--out /data/art --precision int8 --runtime ov --calibration-size 64")
    assert run_command(cell) == ("python -m bench --runtime ov --model LeViT_128S --opset 17 --weights official "
                                 "--optimize gemm --calibration-size 64 --artifacts /data/art --batch 8 --precision "
                                 "int8 --threads 2 --option streams=2 --drift")
    # drift measured on a folder of images against Paddle Inference: the same folder and labels again
    r.drift = {"agreement": 1.0, "agreement_ci": [0.9, 1.0], "reference_source": "paddle inference fp32 (cached)",
               "data": {"kind": "list", "root": "/data/val 1k", "list_file": "/data/val 1k/val_list.txt"}}
    assert run_command(_cell(tmp_path / "folder", r)).endswith(
        "--data '/data/val 1k' --labels '/data/val 1k/val_list.txt'")


@pytest.mark.parametrize("bad, message", [
    ({"max_latency_ms": 0}, "--max-latency-ms must be a positive number, got 0"),
    ({"min_throughput": -1.0}, "--min-throughput must be a positive number"),
    ({"max_drop": float("nan")}, "--max-drop must be a positive number"),
    ({"max_drop": 150}, "--max-drop is in percentage points"),
])
def test_budgets_must_be_positive(bad, message):
    with pytest.raises(BudgetError, match=message):
        Budgets(**bad)


# --- the command ---------------------------------------------------------------------------------------------


def bench(*args: str, cwd: Path):
    return run_module("bench", *args, cwd=cwd, timeout=120)


def one_error(capsys, fragment: str, *argv: str) -> None:
    from bench.recommend.cli import main

    code, out, err = call_main(main, capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert out == ""


@pytest.fixture
def results(tmp_path) -> Path:
    return write(tmp_path / "runs.jsonl", [config("ov", "int8", p50=2.0, agreement=0.95, trained=False),
                                           config("ov", p50=4.0, agreement=1.0, trained=False)])


def test_recommend_prints_the_choice_and_the_commands(results, tmp_path):
    proc = bench("recommend", str(results), "--model", "LeViT_128S", "--max-latency-ms", "10", "--max-drop", "1",
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("LeViT_128S on box-a: highest images/s with p90 latency <= 10 ms and top-1 drop <= 1")
    assert "UNTRAINED WEIGHTS" in out
    chosen = next(line for line in out.splitlines() if line.lstrip().startswith("CHOSEN"))
    assert "ov fp32 b1 opset 17" in chosen and "margin: 5.600 ms under 10 ms" in chosen
    rejected = next(line for line in out.splitlines() if line.lstrip().startswith("rejected"))
    assert "ov int8" in rejected and "drift interval above budget" in rejected
    assert "make it:  python -m export --model LeViT_128S --opset 17 --weights official" in out
    assert "run it:   python -m bench --runtime ov --model LeViT_128S --opset 17 --weights official --batch 1" in out


def test_recommend_exits_1_when_nothing_qualifies(results, tmp_path):
    proc = bench("recommend", str(results), "--model", "LeViT_128S", "--max-latency-ms", "1", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "no configuration qualifies: the latency budget alone rejects 2 configuration(s)" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--model", "ResNet50", "--max-latency-ms", "10"], "unknown model 'ResNet50'"),
    (["--model", "MobileViT_S", "--max-latency-ms", "10"], "the results hold no record of MobileViT_S"),
    (["--model", "LeViT_128S", "--max-latency-ms", "-3"], "--max-latency-ms: must be a positive number, got '-3'"),
    (["--model", "LeViT_128S", "--min-throughput", "fast"], "must be a positive number, got 'fast'"),
    (["--model", "LeViT_128S", "--max-drop", "0"], "--max-drop: must be a positive number"),
    (["--model", "LeViT_128S"], "give a budget: --max-latency-ms X or --min-throughput N"),
    (["--model", "LeViT_128S", "--max-latency-ms", "10", "--batch", "4"], "no record of LeViT_128S at batch 4"),
    (["--model", "LeViT_128S", "--max-latency-ms", "10", "--target", "gpu-9"], "no record of LeViT_128S on 'gpu-9'"),
])
def test_bad_input_is_one_line(results, capsys, args, fragment):
    one_error(capsys, fragment, str(results), *args)


def test_an_empty_results_file_is_one_line(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    one_error(capsys, "empty results file", str(tmp_path / "empty.jsonl"), "--model", "LeViT_128S",
              "--max-latency-ms", "10")


# --- the report ------------------------------------------------------------------------------------------------


def test_the_report_recommends_and_stars_the_choice(tmp_path):
    from bench.report import plots
    from bench.report.build import build_report
    from bench.report.figures import _AccuracyGroup
    from bench.report.recommendation import recommended
    from bench.report.results import select_cells
    from bench.report.sections import Context, series_extra_fn

    records = [config("ov", "int8", p50=2.0, agreement=0.95), config("ov", p50=4.0), config("ort", p50=5.0)]
    results = write(tmp_path / "runs.jsonl", records)
    budgets = Budgets(max_latency_ms=10, max_drop=1.0)
    text = build_report([results], tmp_path / "out", budgets=(budgets, "the command line")).read_text()
    section = text.split("## Recommendation\n")[1].split("\n## ")[0]
    assert "Budgets (the command line): lowest p90 latency with p90 latency <= 10 ms and top-1 drop <= 1" in section
    assert "| CHOSEN | ov fp32 b1 opset 17 | 4.400 |" in section
    assert "| rejected | ov int8 b1 opset 17 | 2.200 |" in section and "drift interval above budget" in section
    assert (f"`python -m bench recommend {results} --model LeViT_128S --objective latency --max-latency-ms 10 "
            "--max-drop 1` prints the commands") in section
    # the chosen point is starred on its latency-vs-accuracy figure, and only it
    loaded = read_records(results).records
    cells = select_cells(loaded)
    ctx = Context(cells, tmp_path, "agreement", plots.Styler([]), series_extra_fn(cells),
                  recommended=recommended(loaded, budgets, "the command line", [results]))
    group = _AccuracyGroup()
    group.add_model(ctx, "LeViT_128S", cells)
    assert [(p.series.runtime, p.series.precision) for p in group.panels[0].points if p.chosen] == [("ov", "fp32")]
    assert "Starred: the configuration the Recommendation section chooses." in group.caption()


def test_the_report_takes_its_budgets_from_bench_yaml(tmp_path):
    results = write(tmp_path / "runs.jsonl", [config("ov", p50=4.0), config("ort", p50=5.0)])
    (tmp_path / "bench.yaml").write_text("recommend:\n  max_latency_ms: 4\n")
    proc = run_module("bench", "report", str(results), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Budgets (bench.yaml recommend:): highest images/s with p90 latency <= 4 ms" in text
    assert "No configuration qualifies: the latency budget alone rejects 2 configuration(s)" in text
    (tmp_path / "bench.yaml").unlink()  # no budgets anywhere: no section
    proc = run_module("bench", "report", str(results), "--out", str(tmp_path / "plain"), cwd=tmp_path)
    assert proc.returncode == 0 and "## Recommendation" not in (tmp_path / "plain" / "report.md").read_text()


def test_bench_yaml_recommend_section():
    from bench.config import config_from_dict
    from core.yamlio import ConfigError

    cfg = config_from_dict({"recommend": {"max_latency_ms": 10, "max_drop": 0.5, "batch": 1}})
    assert cfg.recommend == Budgets("throughput", 10.0, None, 0.5, "p90", 1)
    assert config_from_dict({"recommend": {"objective": "latency", "max_latency_ms": None}}).recommend is None
    with pytest.raises(ConfigError, match=r"recommend.max_latency_ms: expected a number > 0, got -1"):
        config_from_dict({"recommend": {"max_latency_ms": -1}})
    with pytest.raises(ConfigError, match=r"recommend.percentile: unknown percentile 'p80'"):
        config_from_dict({"recommend": {"max_drop": 1, "percentile": "p80"}})
