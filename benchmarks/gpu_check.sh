#!/usr/bin/env bash
# The first run on an NVIDIA GPU, in under 10 minutes: environment, GPU tests, a small sweep, a report.
#
#   pip install -e ".[gpu]"            # once: onnxruntime-gpu[cuda,cudnn], TensorRT 10, export tools (see README)
#   bash benchmarks/gpu_check.sh       # from the repository root
#
# 1. environment: nvidia-smi, packages, `python -m bench list` (which providers are usable, or why not);
# 2. the GPU tests: pytest -m gpu tests/test_gpu.py (TensorRT prepare twice / other batch, measure() in both
#    scopes, fp16/int8 builds against ORT CPU, ORT CUDA/TensorRT providers, placement, TF32 read back);
# 3. the sweep of benchmarks/gpu_check.yaml (two models x ort cuda / trt x fp32, fp16, int8 x batch 1, 8, drift
#    on the 44 images): the fp32 cells first, then the rest, each phase stopped at its deadline (the sweep is
#    resumable: rerunning this script with the same OUT finishes it);
# 4. `python -m bench report` and a one-line summary per record.
# Everything lands in $OUT. Settings are variables, e.g.:
#   MODELS="MobileViT_XXS" BATCHES="1" BUDGET_S=300 bash benchmarks/gpu_check.sh
set -uo pipefail

PY=${PY:-python}
CONFIG=${CONFIG:-benchmarks/gpu_check.yaml}
OUT=${OUT:-results/gpu-check/$(date +%Y%m%d-%H%M%S)}
ARTIFACTS=${ARTIFACTS:-}            # export folder (default: the config's)
MODELS=${MODELS:-}                  # e.g. "MobileViT_XXS LeViT_128S" (default: the config's)
BATCHES=${BATCHES:-}                # e.g. "1 8"
PRECISIONS=${PRECISIONS:-}          # e.g. "fp32 fp16" for both runtimes
BUDGET_S=${BUDGET_S:-570}           # everything, report included, ends by then
TESTS_TIMEOUT_S=${TESTS_TIMEOUT_S:-180}
REPORT_S=${REPORT_S:-45}            # kept for the report and the summary
TESTS=${TESTS:-tests/test_gpu.py}
export PYTHONUNBUFFERED=1

mkdir -p "$OUT"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - REPORT_S - $(elapsed) )); }
log() { echo "[gpu-check +$(elapsed)s] $*" | tee -a "$OUT/gpu_check.log"; }

# --- 1. environment ---------------------------------------------------------------------------------------------
log "environment -> $OUT/env.txt"
{
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  else
    echo "nvidia-smi: not found (no NVIDIA driver here)"
  fi
  "$PY" -V 2>&1
  "$PY" -m pip list 2>/dev/null | grep -iE '^(onnxruntime|onnx |tensorrt|cuda-|nvidia-|numpy |openvino |paddle)' || true
  echo "NVIDIA_TF32_OVERRIDE=${NVIDIA_TF32_OVERRIDE:-<unset>}"
  echo "--- python -m bench list"
  "$PY" -m bench list ort trt 2>&1
} > "$OUT/env.txt"
cat "$OUT/env.txt"

# --- 2. GPU tests -------------------------------------------------------------------------------------------------
log "pytest -m gpu (at most ${TESTS_TIMEOUT_S}s) -> $OUT/gpu-tests.txt"
timeout -s TERM "$TESTS_TIMEOUT_S" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider \
  --junitxml "$OUT/gpu-tests.xml" $TESTS > "$OUT/gpu-tests.txt" 2>&1
log "pytest exit $? (124: stopped at its deadline)"
tail -n 30 "$OUT/gpu-tests.txt"

# --- 3. sweep: fp32 first, then the rest ------------------------------------------------------------------------
"$PY" - "$CONFIG" "$OUT" "$ARTIFACTS" "$MODELS" "$BATCHES" "$PRECISIONS" <<'EOF' || exit 2
import sys
from pathlib import Path
import yaml
config, out, artifacts, models, batches, precisions = sys.argv[1:]
data = yaml.safe_load(Path(config).read_text())
data["results"] = str(Path(out) / "runs.jsonl")
if artifacts:
    data["artifacts"] = artifacts
sweep = data["sweep"]
if models:
    sweep["models"] = data["export"]["models"] = models.split()
if batches:
    sweep["batches"] = [int(b) for b in batches.split()]
if precisions:
    sweep["precisions"] = {name: precisions.split() for name in sweep["runtimes"]}
Path(out, "sweep.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
sweep["precisions"] = {name: ["fp32"] for name in sweep["runtimes"]}
Path(out, "sweep-fp32.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
EOF
for phase in sweep-fp32 sweep; do
  budget=$(left)
  if (( budget < 20 )); then log "$phase: no time left (budget ${BUDGET_S}s)"; break; fi
  log "$phase: python -m bench sweep --config $OUT/$phase.yaml (at most ${budget}s) -> $OUT/$phase.txt"
  timeout -s TERM "$budget" "$PY" -m bench sweep --config "$OUT/$phase.yaml" > "$OUT/$phase.txt" 2>&1
  log "$phase exit $? (1: some cell failed; 124 or 130: stopped at its deadline, rerun with OUT=$OUT to resume)"
  tail -n 40 "$OUT/$phase.txt"
done

# --- 4. report and summary --------------------------------------------------------------------------------------
if [ -s "$OUT/runs.jsonl" ]; then
  log "report -> $OUT/report"
  timeout 120 "$PY" -m bench report "$OUT/runs.jsonl" --out "$OUT/report" > "$OUT/report.txt" 2>&1 \
    || log "report failed: see $OUT/report.txt"
  "$PY" - "$OUT/runs.jsonl" <<'EOF' | tee "$OUT/summary.txt"
import sys
from pathlib import Path
from bench.records import read_records
for r in read_records(Path(sys.argv[1])).valid():
    eff, t, d, g = r.runtime.effective or {}, r.timing, r.drift or {}, r.gates or {}
    lat = (t.latency_ms or {}) if t else {}
    dev = (t.device_latency_ms or {}) if t else {}
    placement = (eff.get("node_placement") or {}).get("problem")
    figures = [f"p50 {lat['p50']:.3f} ms" if lat else "", f"device p50 {dev['p50']:.3f} ms" if dev else "",
               f"agreement {d['agreement']:.3f} max|diff| {d['max_abs_diff']:.2g}" if d else "",
               f"gates {g['precision']} {'pass' if g['passed'] else 'FAIL'}" if g else "",
               f"layers {eff['layer_precisions']}" if eff.get("layer_precisions") else "",
               f"tf32 {eff['tf32']}" if "tf32" in eff else "", f"placement: {placement}" if placement else ""]
    head = f"{r.status:7} {r.model.name} {r.runtime.name} {eff.get('provider', '')} " \
           f"{r.runtime.precision}->{r.runtime.precision_ran} b{r.params.batch}"
    tail = (r.error.message[:200] if r.error else "; ".join(f for f in figures if f))
    print(f"{head}: {tail}")
EOF
else
  log "no records in $OUT/runs.jsonl"
fi
log "done in $(elapsed)s; files in $OUT"
