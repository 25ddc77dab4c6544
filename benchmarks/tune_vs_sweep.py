"""Does ``bench tune`` find what the exhaustive sweep of the same space finds, in at most 40 % of its machine time?

Per model, the space is the one ``bench tune`` searches with the flags given after ``--`` (runtimes, precisions,
graph levels, batch, threads or requests; default: everything this host can run). The exhaustive side measures
every candidate in full with its drift pass through ``python -m bench sweep`` (one sweep per thread count and
graph level: the sweep has no such axes), the adaptive side is one ``python -m bench tune``. The exports are
made first, for both, and not counted. Both read the measurement settings and drift data of ``--config``.

For each model the table gives each side's wall time and its processes' CPU time, tune's share of the sweep's
wall time (the target: <= 0.40), each side's choice under the tune's budgets (``bench recommend``'s rule over
its own records), and the verdict: ``same``, ``within noise`` (the two choices as the sweep measured them,
``bench compare``'s band of their CVs, at least the tune's ``--min-noise``), or else the two choices loaded in this
process and timed in 15 interleaved rounds with a second copy of the sweep's choice as the A/A control (the sweep's
cells of them ran minutes apart, and this machine drifts by more than a cell's CV in minutes): ``worse beyond
noise`` when the median ratio of the tune's cost to the sweep's is above every round's A/A ratio (and above 1 +
``--min-noise``) and the tune's choice was slower in at least the 12 of 15 rounds a one-sided sign test at 5 %
needs; else ``within noise side by side`` (the rule of ``graph_speedup.py``'s A/A control, with the sign test).
``--judge-again`` recomputes the verdicts of a run already in ``--out``. Run it on a quiet machine: on a busy one
the cells are flagged contended and neither side can choose.

    python benchmarks/tune_vs_sweep.py [--models LeViT_128S MobileViT_XXS] [--config bench.yaml] [--out DIR]
        [--judge-again] [-- TUNE FLAGS, default: --objective latency --max-drop 10]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

# Run from a checkout: make the repo importable even when the editable install is stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_speedup import time_interleaved

from bench.records import read_records
from bench.report.choice import Recommendation, recommend, within_noise
from bench.sweep.runner import export_missing
from bench.tune.cli import Job, build_parser, job_from_args, plan
from bench.tune.space import Candidate, request_for
from core.cpu import describe
from core.files import write_json_atomic

DEFAULT_TUNE_FLAGS = ["--objective", "latency", "--max-drop", "10"]


def timed(command: list[str]) -> dict:
    """Run ``command``; its wall seconds and the CPU seconds of it and every process it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": time.monotonic() - started, "cpu_s": cpu, "returncode": proc.returncode,
            "stdout": proc.stdout, "stderr": proc.stderr[-2000:]}


def sweep_configs(job: Job, found: list[Candidate], results: Path, folder: Path) -> list[Path]:
    """One bench.yaml per (threads, graph level) group of the candidates: the same cells, measured in full."""
    cfg, setting = job.setting.config, job.setting
    groups: dict[tuple, list[Candidate]] = {}
    for c in found:
        groups.setdefault((c.threads, c.level), []).append(c)
    paths = []
    for (threads, level), members in groups.items():
        runtimes = list(dict.fromkeys(c.runtime for c in members))
        config = {
            "results": str(results), "artifacts": str(cfg.artifacts),
            "export": {"weights": setting.target.weights, "optimize": level, "batch": cfg.export.batch,
                       "int8": {k: v for k, v in vars(cfg.export.int8).items()}},
            "sweep": {"models": [job.model], "opsets": [setting.target.opset], "runtimes": runtimes,
                      "precisions": {r: list(dict.fromkeys(c.precision for c in members if c.runtime == r))
                                     for r in runtimes},
                      "batches": sorted({c.batch for c in members}), "scenarios": [setting.scenario],
                      "requests": sorted({c.requests for c in members}, key=lambda r: r or 0),
                      "cell_timeout_s": cfg.sweep.cell_timeout_s, "devices": dict(cfg.sweep.devices),
                      "drift": ({"data": cfg.sweep.drift_data, "labels": cfg.sweep.drift_labels}
                                if cfg.sweep.drift_data else False)},
            "measure": {**{k: getattr(cfg.measure, k) for k in ("warmup", "iterations", "min_duration_s",
                                                                  "max_duration_s", "scope", "seed")},
                        "threads": threads},
            "gates": cfg.gates,
        }
        path = folder / f"sweep-{job.model}-t{threads or 'auto'}-{level}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        paths.append(path)
    return paths


def choice_of(path: Path, job: Job) -> Recommendation | None:
    recs = recommend(read_records(path).records, job.search.budgets, job.model, min_noise=job.search.min_noise)
    return recs[0] if recs else None


def verdict(sweep: Recommendation | None, tune: Recommendation | None, job: Job) -> str:
    """Whether the tune chose the sweep's configuration, or one within its noise: as the sweep measured both, and
    when those sequential cells (minutes apart) cannot tell, as both measure side by side (``interleaved``)."""
    if sweep is None or sweep.choice is None or tune is None or tune.choice is None:
        return "no choice on " + " and ".join(side for side, rec in (("sweep", sweep), ("tune", tune))
                                              if rec is None or rec.choice is None)
    key = tune.choice.cell.record.cell_key
    if key == sweep.choice.cell.record.cell_key:
        return "same"
    as_swept = next((j for j in sweep.judged if j.cell.record.cell_key == key), None)
    if as_swept is None or not as_swept.qualifies:
        return "tune's choice does not qualify in the sweep's measurement"
    if within_noise(sweep.choice, as_swept, job.search.budgets, job.search.min_noise):
        return "within noise"
    return side_verdict(interleaved(sweep.choice.cell.record, tune.choice.cell.record, job.search.budgets),
                        job.search.min_noise)


def side_verdict(side: dict, min_noise: float) -> str:
    """The verdict on the side-by-side figures of ``interleaved``."""
    band = (f"tune's / sweep's choice {side['ratio']:.3f} [{side['lo']:.3f}..{side['hi']:.3f}], slower in "
            f"{side['worse_rounds']} of {ROUNDS} interleaved rounds; A/A {side['aa_ratio']:.3f} "
            f"[{side['aa_lo']:.3f}..{side['aa_hi']:.3f}]")
    if side["ratio"] > max(1 + min_noise, side["aa_hi"]) and side["worse_rounds"] >= SIGN_TEST_ROUNDS:
        return f"worse beyond noise ({band})"
    return f"within noise side by side ({band}); the sweep's sequential cells said worse beyond noise"


ROUNDS, RUNS = 15, 20
# Slower in at least this many of the ROUNDS rounds: a one-sided sign test at 5 % (P(X >= 12 | 15, 1/2) = 0.018).
SIGN_TEST_ROUNDS = min(k for k in range(ROUNDS + 1)
                       if sum(math.comb(ROUNDS, i) for i in range(k, ROUNDS + 1)) / 2 ** ROUNDS <= 0.05)


def interleaved(sweep_choice, tune_choice, budgets) -> dict:
    """The two choices loaded in this process and timed in turns (``graph_speedup.time_interleaved``), with a second
    copy of the sweep's choice as the A/A control: per round, the objective's cost of each (latency: the budgets'
    percentile of its runs; throughput: mean ms per image); the median and range over rounds of the tune's cost over
    the sweep's, the rounds in which it was higher, and the same figures of the control over the sweep's."""
    from bench.harness.measure import synthetic_feeds
    from core.artifact import Artifact
    from runtimes import get_runtime
    from runtimes.base import RuntimeOptions

    def percentile(samples: list[float]) -> float:
        if budgets.objective == "throughput":
            return float(np.mean(samples))
        return float(np.percentile(samples, float(budgets.percentile.lstrip("p"))))

    adapters, batches = {}, {}
    try:
        for side, record in (("sweep", sweep_choice), ("again", sweep_choice), ("tune", tune_choice)):
            adapter = get_runtime(record.runtime.name)(RuntimeOptions(**record.runtime.options_asked))
            artifact = Artifact.from_manifest(Path(record.model.manifest))
            adapter.load(artifact)
            batches[side] = record.params.batch
            adapter.prepare(synthetic_feeds(artifact, batches[side]))
            adapters[side] = adapter
        costs = time_interleaved(adapters, ROUNDS, RUNS, statistic=percentile)
    finally:
        for adapter in adapters.values():
            adapter.close()
    per_image = budgets.objective == "throughput"

    def ratios(side: str) -> list[float]:
        return [(t / batches[side] if per_image else t) / (s / batches["sweep"] if per_image else s)
                for s, t in zip(costs["sweep"], costs[side], strict=True)]

    tune, again = ratios("tune"), ratios("again")
    return {"ratio": statistics.median(tune), "lo": min(tune), "hi": max(tune),
            "worse_rounds": sum(r > 1 for r in tune),
            "aa_ratio": statistics.median(again), "aa_lo": min(again), "aa_hi": max(again)}


def one_model(model: str, tune_flags: list[str], config: Path | None, out: Path) -> dict:
    tune_results, sweep_results = out / f"{model}-tune.jsonl", out / f"{model}-sweep.jsonl"
    argv = ["--model", model, *tune_flags, "--results", str(tune_results)]
    argv += ["--config", str(config)] if config else []
    job = job_from_args(build_parser().parse_args(argv))
    found, left_out = plan(job)
    requests = [request_for(c, job.setting, job.setting.config.measure, "exports", drift=False) for c in found]
    export_missing(requests, job.setting.config, out / f"{model}-exports.jsonl", ())
    sweeps = [timed([sys.executable, "-m", "bench", "sweep", "--config", str(path)])
              for path in sweep_configs(job, found, sweep_results, out)]
    tuned = timed([sys.executable, "-m", "bench", "tune", *argv])
    sweep_rec, tune_rec = choice_of(sweep_results, job), choice_of(tune_results, job)
    sweep_wall = sum(s["wall_s"] for s in sweeps)
    return {"model": model, "candidates": len(found), "left_out": left_out,
            "sweep": {"wall_s": sweep_wall, "cpu_s": sum(s["cpu_s"] for s in sweeps), "commands": len(sweeps),
                      "choice": sweep_rec.choice.label if sweep_rec and sweep_rec.choice else None},
            "tune": {"wall_s": tuned["wall_s"], "cpu_s": tuned["cpu_s"], "returncode": tuned["returncode"],
                     "choice": tune_rec.choice.label if tune_rec and tune_rec.choice else None,
                     "log": tuned["stdout"]},
            "share": tuned["wall_s"] / sweep_wall if sweep_wall else None,
            "verdict": verdict(sweep_rec, tune_rec, job)}


def table(rows: list[dict]) -> str:
    lines = ["| model | candidates | sweep s (CPU s) | tune s (CPU s) | tune / sweep | sweep's choice | tune's choice "
             "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, t = r["sweep"], r["tune"]
        lines.append(f"| {r['model']} | {r['candidates']} | {s['wall_s']:.0f} ({s['cpu_s']:.0f}) | "
                     f"{t['wall_s']:.0f} ({t['cpu_s']:.0f}) | {r['share']:.2f} | {s['choice']} | {t['choice']} | "
                     f"{r['verdict']} |")
    return "\n".join(lines)


def main() -> int:
    argv = sys.argv[1:]
    tune_flags = argv[argv.index("--") + 1:] if "--" in argv else DEFAULT_TUNE_FLAGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["LeViT_128S", "MobileViT_XXS"])
    p.add_argument("--config", type=Path, help="bench.yaml of both sides (default: ./bench.yaml if present)")
    p.add_argument("--out", type=Path, default=Path("results/tune_vs_sweep"), help="results files and JSON")
    p.add_argument("--judge-again", action="store_true",
                   help="recompute the verdicts of the run already in --out from its records (the side-by-side "
                        "check measured anew), keeping its time figures")
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.judge_again:
        return judge_again(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    stale = [f for m in args.models for f in args.out.glob(f"{m}-*.jsonl")]
    if stale:
        print(f"error: {args.out} holds results of an earlier run ({stale[0].name}): pass another --out",
              file=sys.stderr)
        return 2
    rows = [one_model(model, tune_flags, args.config, args.out) for model in args.models]
    write_results(args.out, tune_flags, rows)
    return 0


def judge_again(out: Path) -> int:
    """The verdicts of an earlier run in ``out`` recomputed from its records (the side-by-side check measured
    anew); its time figures are kept as they were."""
    saved = json.loads((out / "tune_vs_sweep.json").read_text())
    for row in saved["rows"]:
        argv = ["--model", row["model"], *saved["tune_flags"], "--results", str(out / f"{row['model']}-tune.jsonl")]
        job = job_from_args(build_parser().parse_args(argv))
        row["verdict"] = verdict(choice_of(out / f"{row['model']}-sweep.jsonl", job),
                                 choice_of(out / f"{row['model']}-tune.jsonl", job), job)
    write_results(out, saved["tune_flags"], saved["rows"])
    return 0


def write_results(out: Path, tune_flags: list[str], rows: list[dict]) -> None:
    print(f"{describe()}\ntune flags: {' '.join(tune_flags)}\n\n{table(rows)}")
    write_json_atomic(out / "tune_vs_sweep.json", {"cpu": describe(), "tune_flags": tune_flags, "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
