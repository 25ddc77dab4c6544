"""``python -m bench``: benchmark one model on one runtime, list runtimes, or run the bench.yaml sweep.

    python -m bench --runtime ov --model MobileViT_S --batch 8 [--precision bf16] [--scope end2end]
    python -m bench --runtime ort --manifest path/to/model.onnx.json     # bring your own exported model
    python -m bench list [--json]
    python -m bench sweep [--config bench.yaml] [--results PATH] [--retry-errors]

Every run appends one record (ok or error) to the results file. Expected failures print one ``error: ...``
line on stderr and exit 2 (bad arguments) or 1 (the run failed); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import env
from bench.config import (
    OPSET_RANGE,
    SCOPES,
    BenchConfig,
    ConfigError,
    canonical_runtime,
    expand_models,
    load_config,
)
from bench.measure import MeasureParams, measure
from bench.records import Record, append_record, check_writable, new_run_id
from export.manifest import MANIFEST_NAME
from export.weights import sha256_of
from runtimes.base import Artifact, Runtime, RuntimeOptions

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(ValueError):
    """The request itself is invalid (exit 2)."""


class BenchFailure(RuntimeError):
    """The request is valid but could not be carried out here (exit 1)."""


@dataclass
class RunRequest:
    """One benchmark cell, fully resolved (bench.yaml defaults + CLI flags). Serialisable for sweep cells."""

    runtime: str
    model: str | None = None
    opset: int = 17
    batch: int = 1
    precision: str = "fp32"
    device: str | None = None  # None: the adapter's first device
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # runtime-specific knobs (RuntimeOptions.extra)
    weights: str = "seeded"
    export_batch: str | int = "dynamic"
    manifest: str | None = None  # bring your own model: use this manifest instead of the export stage's
    artifacts: str = "artifacts"
    no_export: bool = False
    results: str = "results/runs.jsonl"
    warmup: int = 10
    iterations: int = 50
    min_duration_s: float = 2.0
    max_duration_s: float = 30.0
    scope: str = "compute"
    seed: int = 0
    run_id: str | None = None
    record_id: str | None = None
    drift: dict[str, Any] | None = None  # DriftSettings as a dict; None: no drift pass
    enforce_gates: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRequest:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def weights_key(self) -> str:
        """The weights part of the cell key; a manifest run is keyed by its manifest."""
        if not self.manifest:
            return self.weights
        path = Path(self.manifest).resolve()
        return f"manifest:{path / MANIFEST_NAME if path.is_dir() else path}"


# A drift pass runs after timing, on the still-open runtime, and returns (drift, gates) for the record.
# The default pass comes from RunRequest.drift (see bench.drift_pass); tests may pass their own.
DriftPass = Callable[[Runtime, Artifact, RunRequest], tuple[dict | None, dict | None]]


@dataclass
class CellResult:
    record: Record
    exit_code: int
    exception: BaseException | None = None


class _Draft:
    """The record under construction; whatever is known when a run fails still goes into its error record."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.model: dict[str, Any] = {
            "name": request.model, "opset": request.opset, "opset_written": None,
            "batch": request.export_batch, "onnx_sha256": None, "manifest": request.manifest,
            "weights": {"requested": request.weights_key},
        }
        self.runtime: dict[str, Any] = {
            "name": request.runtime, "versions": {}, "device": request.device, "precision": request.precision,
            "options_asked": None, "effective": {}, "notes": [],
        }
        self.params: dict[str, Any] = {
            "batch": request.batch, "warmup": request.warmup, "iterations": request.iterations,
            "min_duration_s": request.min_duration_s, "max_duration_s": request.max_duration_s,
            "scope": request.scope, "threads": request.threads, "seed": request.seed,
        }
        self.drift: dict | None = None
        self.gates: dict | None = None

    def record(self, status: str, timing: dict | None = None, error: BaseException | None = None,
               error_type: str | None = None) -> Record:
        extra = {"record_id": self.request.record_id} if self.request.record_id else {}
        err = None
        if error is not None:
            err = {"type": error_type or type(error).__name__, "message": str(error) or type(error).__name__}
        return Record(run_id=self.request.run_id or new_run_id(), status=status, error=err, model=self.model,
                      runtime=self.runtime, params=self.params, timing=timing, drift=self.drift,
                      gates=self.gates, environment=env.capture_environment(), git=env.git_info(), **extra)


def skeleton_record(request: RunRequest, status: str, error_type: str, message: str) -> Record:
    """A record for a cell that never ran (runtime unavailable, export failed, cell crashed)."""
    return _Draft(request).record(status, error=RuntimeError(message), error_type=error_type)


def run_cell(request: RunRequest, drift_pass: DriftPass | None = None) -> CellResult:
    """Validate, resolve the artifact, measure; return the record. Expected failures become error records."""
    draft = _Draft(request)
    try:
        timing = _run(request, draft, drift_pass)
    except UsageError as exc:
        return CellResult(draft.record("error", error=exc), EXIT_USAGE, exc)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - adapters raise their engines' own types; all become records
        log.debug("run failed", exc_info=True)
        return CellResult(draft.record("error", error=exc), EXIT_FAILED, exc)
    return CellResult(draft.record("ok", timing=timing), EXIT_OK)


def _run(request: RunRequest, draft: _Draft, drift_pass: DriftPass | None) -> dict:
    from runtimes import get_runtime, probe

    cls = _validate(request)
    if drift_pass is None and request.drift is not None:
        drift_pass = _drift_pass
    draft.runtime["name"] = request.runtime
    device = request.device or cls.devices[0]
    draft.runtime["device"] = device
    availability = probe(request.runtime, device=device)
    if not availability.available:
        raise BenchFailure(f"runtime {request.runtime!r} is not available: {availability.reason}")

    manifest_path = resolve_manifest(request)
    artifact = _load_artifact(manifest_path, draft)
    params = MeasureParams(request.warmup, request.iterations, request.min_duration_s, request.max_duration_s,
                           request.scope, request.seed)
    options = RuntimeOptions(device=device, precision=request.precision, threads=request.threads,
                             batch=request.batch, extra=dict(request.options))
    draft.runtime["options_asked"] = options.to_dict()
    runtime = get_runtime(request.runtime)(options)
    try:
        try:
            result = measure(runtime, artifact, request.batch, params)
        finally:
            # Whatever the adapter learnt before a failure (fallbacks, versions) belongs in the record.
            draft.runtime.update(versions=_versions(runtime), effective=runtime.effective,
                                 notes=runtime.notes)
        if drift_pass is not None:
            draft.drift, draft.gates = drift_pass(runtime, artifact, request)
    finally:
        runtime.close()
    return result.timing_dict()


def _drift_pass(runtime: Runtime, artifact: Artifact, request: RunRequest) -> tuple[dict, dict | None]:
    from bench.drift_pass import DriftSettings, run_drift

    cache_dir = str(Path(request.artifacts) / "reference-cache")
    settings = DriftSettings(**{**request.drift, "cache_dir": cache_dir})
    # Gates judge what ran: bf16 asked but run as fp32 must meet the fp32 thresholds.
    precision = runtime.effective.get("precision") or request.precision
    return run_drift(runtime, artifact, request.batch, precision, settings)


def _versions(runtime: Runtime) -> dict[str, str]:
    try:
        return runtime.versions()
    except Exception as exc:  # noqa: BLE001 - must not hide the error that ended the run
        log.debug("%s: versions() failed: %s", runtime.name, exc)
        return {}


def _validate(request: RunRequest) -> type[Runtime]:
    """Check the request before any heavy work; returns the adapter class."""
    from runtimes import get_runtime

    if not isinstance(request.batch, int) or request.batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {request.batch}")
    if request.scope not in SCOPES:
        raise UsageError(f"unknown scope {request.scope!r}; allowed: {', '.join(SCOPES)}")
    if (request.warmup < 0 or request.iterations < 1 or request.min_duration_s < 0
            or request.max_duration_s <= 0):
        raise UsageError("--warmup must be >= 0, --iterations >= 1, --duration >= 0 and --max-duration > 0")
    if request.threads is not None and request.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {request.threads}")
    try:
        request.runtime = canonical_runtime(request.runtime)
        if request.manifest is None:
            if not request.model:
                raise UsageError("--model or --manifest is required")
            matched = expand_models([request.model])
            if len(matched) > 1:
                raise UsageError(f"--model {request.model!r} matches {', '.join(matched)}; pick one "
                                 f"(or run `python -m bench sweep`)")
            request.model = matched[0]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    lo, hi = OPSET_RANGE
    if request.manifest is None and not lo <= request.opset <= hi:
        raise UsageError(f"invalid opset {request.opset}; allowed: {lo}..{hi}")
    cls = get_runtime(request.runtime)  # RuntimeUnavailable (exit 1) if the adapter cannot be imported here
    if request.precision not in cls.precisions:
        raise UsageError(f"runtime {request.runtime!r} does not support precision {request.precision!r}; "
                         f"allowed: {', '.join(cls.precisions)}")
    try:  # the adapter's own checks of device and options, before any heavy work
        cls(RuntimeOptions(device=request.device or cls.devices[0], precision=request.precision,
                           threads=request.threads, batch=request.batch, extra=dict(request.options)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return cls


def resolve_manifest(request: RunRequest) -> Path:
    """The manifest to run: ``--manifest``, or the export stage's (exported now unless ``--no-export``)."""
    if request.manifest:
        path = Path(request.manifest)
        path = path / MANIFEST_NAME if path.is_dir() else path
        if not path.is_file():
            raise BenchFailure(f"manifest {path} not found")
        return path
    from export.pipeline import artifact_dir

    weights = request.weights
    root = Path(request.artifacts)
    path = artifact_dir(request.model, request.opset, request.export_batch, weights, root) / MANIFEST_NAME
    if path.is_file():
        return path
    if request.no_export:
        raise BenchFailure(f"{request.model} opset {request.opset} is not exported ({path} not found); "
                           f"run: {export_command(request)}")
    log.info("%s opset %s: not exported yet; exporting (once)", request.model, request.opset)
    # In a child process: paddle (and its thread pools) must not share the process being timed, and a
    # paddle2onnx abort must not take the run down without a record.
    spec = {"model": request.model, "opset": request.opset, "batch": request.export_batch, "weights": weights,
            "root": str(root)}
    child = subprocess.run([sys.executable, "-m", "bench", "_export", json.dumps(spec)], capture_output=True,
                           text=True, errors="replace")
    if child.returncode != 0 or not path.is_file():
        raise BenchFailure(f"export of {request.model} opset {request.opset} failed "
                           f"(exit {child.returncode}): {last_error_line(child.stderr)}")
    return path


def export_command(request: RunRequest) -> str:
    parts = ["python -m export", f"--model {request.model}", f"--opset {request.opset}"]
    if request.export_batch != "dynamic":
        parts.append(f"--batch {request.export_batch}")
    if request.weights != "seeded":
        parts.append(f"--weights {request.weights}")
    if Path(request.artifacts) != Path("artifacts"):
        parts.append(f"--out {request.artifacts}")
    return " ".join(parts)


def _load_artifact(manifest_path: Path, draft: _Draft) -> Artifact:
    try:
        artifact = Artifact.from_manifest(manifest_path)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise BenchFailure(f"cannot read manifest {manifest_path}: {type(exc).__name__}: {exc}") from None
    data = artifact.manifest
    draft.model.update(
        name=artifact.model, opset_written=artifact.opset, batch=data.get("batch", draft.model["batch"]),
        onnx_sha256=artifact.onnx_sha256, manifest=str(manifest_path.resolve()),
        weights={**draft.model["weights"], **(data.get("weights") or {})},
    )
    if draft.request.manifest:  # bring-your-own: the manifest decides the opset
        draft.model["opset"] = (data.get("opset") or {}).get("requested", artifact.opset)
    if not artifact.onnx_path.is_file():
        raise BenchFailure(f"{artifact.onnx_path} not found (named by {manifest_path})")
    actual = sha256_of(artifact.onnx_path)
    if actual != artifact.onnx_sha256:
        raise BenchFailure(f"{artifact.onnx_path} does not match its manifest (sha256 {actual[:12]}..., "
                           f"manifest says {artifact.onnx_sha256[:12]}...); the file changed since export: "
                           f"re-export it")
    return artifact



# --- table ----------------------------------------------------------------------------------------------
_COLUMNS = ("model", "opset", "runtime", "prec", "batch", "p50 ms", "p90 ms", "p99 ms", "mean±std ms", "CV",
            "img/s", "load s", "first ms", "notes")


def table_rows(records: list[dict]) -> list[tuple[str, ...]]:
    rows = []
    for r in records:
        model, runtime, timing = r["model"], r["runtime"], r.get("timing")
        head = (str(model.get("name")), str(model.get("opset")), str(runtime.get("name")),
                str(runtime.get("precision")), str(r["params"].get("batch")))
        if r["status"] != "ok" or not timing:
            error = r.get("error") or {}
            rows.append(head + ("",) * 8 + (f"{r['status'].upper()}: {_one_line(error.get('message', ''))}",))
            continue
        lat = timing["latency_ms"]
        notes = list(runtime.get("notes") or [])
        if timing.get("stopped_by") == "max_duration":
            notes.insert(0, f"stopped at max duration after {lat['count']} runs")
        rows.append(head + (
            _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), f"{_ms(lat['mean'])}±{_ms(lat['std'])}",
            f"{lat['cv']:.1%}", f"{timing['throughput_ips']:.1f}", f"{timing['load_s']:.2f}",
            _ms(timing["first_run_ms"]), "; ".join(notes),
        ))
    return rows


def _ms(value: float) -> str:
    """Enough digits to be useful from microseconds (null runtime) to seconds (big batches)."""
    if value >= 100:
        return f"{value:.1f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.1e}"


def format_table(records: list[dict]) -> str:
    rows = [_COLUMNS, *table_rows(records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        # Text columns (model, runtime, precision) left-aligned, numbers right-aligned; notes run free.
        cells = [c.ljust(widths[i]) if i in (0, 2, 3) else c.rjust(widths[i]) for i, c in enumerate(row)]
        cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def error_line(error: dict) -> str:
    """The record's error as the user reads it; our own error types need no prefix."""
    if error["type"] in ("UsageError", "BenchFailure", "DataError"):
        return error["message"]
    return f"{error['type']}: {error['message']}"


def last_error_line(stderr: str) -> str:
    """A child's own ``error:`` line if it printed one, else its last non-empty line."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1][len("error: "):]
    return lines[-1] if lines else ""


def _one_line(message: str, limit: int = 400) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- argument parsing -----------------------------------------------------------------------------------
def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", required=True, help="ort, ov, paddle, trt (see `python -m bench list`)")
    p.add_argument("--model", help="zoo model name, e.g. MobileViT_S (fnmatch patterns must match one model)")
    p.add_argument("--manifest", help="benchmark this exported model (model.onnx.json or its folder) instead")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset of the export to use (default 17)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--precision", default="fp32", help="fp32 (default), fp16, bf16 or int8")
    p.add_argument("--device", help="cpu, cuda, cuda:N, gpu, ... (default: the runtime's first device)")
    p.add_argument("--threads", type=int, help="CPU threads (default: one per physical core)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="runtime-specific option (repeatable), e.g. --option hint=latency")
    p.add_argument("--weights", help="seeded (default), official, or a .pdparams path/URL")
    p.add_argument("--warmup", type=int, help="warm-up runs after the first run (bench.yaml: measure.warmup)")
    p.add_argument("--iterations", type=int, help="minimum timed runs (bench.yaml: measure.iterations)")
    p.add_argument("--duration", type=float, help="minimum timed seconds (measure.min_duration_s)")
    p.add_argument("--max-duration", type=float, help="stop timing after this many seconds (safety cap)")
    p.add_argument("--scope", help="compute (run only, default) or end2end (host inputs in, outputs out)")
    p.add_argument("--seed", type=int, help="seed of the synthetic inputs (default 0)")
    p.add_argument("--results", help="JSON-lines file to append to (default: results/runs.jsonl)")
    p.add_argument("--artifacts", help="export folder (default: artifacts)")
    p.add_argument("--no-export", action="store_true", help="fail instead of exporting a missing model")
    p.add_argument("--config", type=Path, help="bench.yaml with defaults (default: ./bench.yaml if present)")
    p.add_argument("--json", action="store_true", help="print the record as JSON after the table")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")
    p.add_argument("--run-id", help=argparse.SUPPRESS)
    p.add_argument("--record-id", help=argparse.SUPPRESS)
    d = p.add_argument_group("drift (a separate pass after timing)")
    d.add_argument("--drift", action="store_true", help="also measure drift from Paddle's FP32 logits")
    d.add_argument("--data", help="export (default: the images the export stored Paddle's logits for), "
                                  "synthetic, or an image folder / PaddleClas list file")
    d.add_argument("--labels", help="PaddleClas list file (path label) for --data")
    d.add_argument("--channel-order", choices=("RGB", "BGR"), help="override the model's channel order")
    d.add_argument("--enforce-gates", action="store_true",
                   help="exit 1 when the drift gates of bench.yaml fail for this precision")
    return p


def drift_settings_from_args(args: argparse.Namespace, cfg: BenchConfig) -> dict | None:
    if not (args.drift or args.data or args.labels or args.enforce_gates):
        return None
    if args.labels and args.data in (None, "export", "synthetic"):
        raise UsageError("--labels needs --data FOLDER (the images the list file names)")
    return {"data": args.data or "export", "labels": args.labels, "channel_order": args.channel_order,
            "gates": cfg.gates}


def request_from_args(args: argparse.Namespace, cfg: BenchConfig) -> RunRequest:
    """Layer CLI flags over bench.yaml over defaults."""
    m = cfg.measure
    batch = args.batch
    return RunRequest(
        runtime=args.runtime, model=args.model, opset=args.opset, batch=batch, precision=args.precision,
        device=args.device, threads=args.threads if args.threads is not None else m.threads,
        options=parse_options(args.option),
        weights=args.weights or cfg.export.weights,
        export_batch="dynamic" if cfg.export.batch == "dynamic" else batch,
        manifest=args.manifest, artifacts=args.artifacts or str(cfg.artifacts), no_export=args.no_export,
        results=args.results or str(cfg.results),
        warmup=_pick(args.warmup, m.warmup), iterations=_pick(args.iterations, m.iterations),
        min_duration_s=_pick(args.duration, m.min_duration_s),
        max_duration_s=_pick(args.max_duration, max(m.max_duration_s, 2 * (args.duration or 0))),
        scope=args.scope or m.scope, seed=_pick(args.seed, m.seed), run_id=args.run_id,
        record_id=args.record_id, drift=drift_settings_from_args(args, cfg), enforce_gates=args.enforce_gates,
    )


def parse_options(items: list[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = yaml.safe_load(value)  # "4" -> 4, "true" -> True, "latency" -> "latency"
    return options


def _pick(value, default):
    return default if value is None else value


# --- commands -------------------------------------------------------------------------------------------
def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines would bury the table


def _fail(message: str, code: int, exc: BaseException | None = None, debug: bool = False) -> int:
    if debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {_one_line(message)}", file=sys.stderr)
    return code


def cmd_run(argv: list[str], drift_pass: DriftPass | None = None) -> int:
    args = build_run_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        cfg = load_config(args.config)
        request = request_from_args(args, cfg)
    except (ConfigError, UsageError) as exc:
        return _fail(str(exc), EXIT_USAGE, exc, args.debug)
    results = Path(request.results)
    try:
        check_writable(results)  # before measuring, not after
    except OSError as exc:
        return _fail(f"results file {results} is not writable ({exc.strerror or exc})", EXIT_FAILED, exc,
                     args.debug)
    result = run_cell(request, drift_pass)
    try:
        append_record(results, result.record)
    except OSError as exc:
        return _fail(f"cannot append to {results} ({exc.strerror or exc})", EXIT_FAILED, exc, args.debug)
    record = result.record.to_dict()
    if result.exit_code != EXIT_OK:
        return _fail(error_line(record["error"]), result.exit_code, result.exception, args.debug)
    print(format_table([record]))
    if record.get("drift"):
        print(format_drift(record))
    print(f"\nrecord {record['record_id']} appended to {results}")
    if args.json:
        print("---")
        print(json.dumps(record, indent=1))
    gates = record.get("gates")
    if request.enforce_gates and gates and not gates["passed"]:
        failed = [c for c in gates["checks"] if c["passed"] is False]
        return _fail("drift gates failed for " + request.precision + ": " + ", ".join(
            f"{c['metric']} {c['value']:.4g} vs {c['threshold']:g}" for c in failed), EXIT_FAILED)
    return EXIT_OK


def format_drift(record: dict) -> str:
    """The drift pass in a few lines: agreement, flips, accuracy change with its interval, logit figures."""
    d, gates = record["drift"], record.get("gates")
    low, high = d["agreement_ci"]
    lines = [f"\ndrift vs Paddle FP32 on {d['n']} images ({d['reference_source']}):",
             f"  top-1 agreement {d['agreement']:.2%} (95% CI {low:.2%}..{high:.2%}), {d['flipped']} flipped;"
             f" max |diff| {_num(d['max_abs_diff'])}, mean |diff| {_num(d['mean_abs_diff'])},"
             f" min cosine {_num(d['cosine_min'], '.6f')}; finite: {d['finite']}"]
    if d.get("labelled"):
        lo, hi = d["top1_delta_ci"]
        lines.append(f"  top-1 {d['candidate_top1']:.2%} vs Paddle {d['reference_top1']:.2%}: delta "
                     f"{d['top1_delta']:+.2%} (95% CI {lo:+.2%}..{hi:+.2%}), McNemar p={d['mcnemar_p']:.3g}")
    if gates:
        lines.append(f"  gates ({gates['precision']}): {'PASS' if gates['passed'] else 'FAIL'}")
    if d["data"].get("skipped"):
        lines.append(f"  skipped {len(d['data']['skipped'])} unreadable images (listed in the record)")
    return "\n".join(lines)


def _num(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def cmd_list(argv: list[str]) -> int:
    from runtimes import list_runtimes, probe

    p = argparse.ArgumentParser(prog="python -m bench list", description="Which runtimes can run here.")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--all", action="store_true", help="include test runtimes (null)")
    p.add_argument("names", nargs="*", help="probe only these runtimes")
    args = p.parse_args(argv)
    _setup_logging(False)
    names = args.names or list_runtimes(include_test=args.all or args.json)
    with warnings.catch_warnings():  # probing imports the runtimes; their import-time warnings are noise here
        warnings.simplefilter("ignore")
        found = [probe(name) for name in names]
    if args.json:
        print(json.dumps([dataclasses.asdict(a) for a in found]))
        return EXIT_OK
    width = max(len(a.name) for a in found)
    for a in found:
        state = "available  " if a.available else "unavailable"
        print(f"{a.name.ljust(width)}  {state}  {a.detail if a.available else a.reason}".rstrip())
    return EXIT_OK


def cmd_cell(argv: list[str]) -> int:
    """Internal: run one sweep cell from its JSON request and append its record."""
    request = RunRequest.from_dict(json.loads(argv[0]))
    _setup_logging(False)
    try:
        result = run_cell(request)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # no record: the sweep reruns this cell when resumed
    append_record(Path(request.results), result.record)
    if result.exit_code != EXIT_OK:
        print(f"error: {_one_line(error_line(result.record.error))}", file=sys.stderr)
    return result.exit_code


def cmd_export(argv: list[str]) -> int:
    """Internal: export one (model, opset). Run as a child: paddle stays out of the timed process, and a
    paddle2onnx abort cannot take the caller down."""
    from export.pipeline import ensure_export

    spec = json.loads(argv[0])
    _setup_logging(False)
    try:
        print(ensure_export(spec["model"], spec["opset"], spec["batch"], spec["weights"], Path(spec["root"])))
    except Exception as exc:  # noqa: BLE001 - reported to the sweep as one line
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    # SIGTERM unwinds like Ctrl-C: temporary files are removed and finished records stay.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if command in ("list", "list-runtimes"):
            return cmd_list(argv[1:])
        if command == "sweep":
            from bench.sweep import main as sweep_main

            return sweep_main(argv[1:])
        if command in ("report", "compare"):
            from bench.compare import main_compare
            from bench.report import main_report

            return (main_report if command == "report" else main_compare)(argv[1:])
        if command == "_cell":
            return cmd_cell(argv[1:])
        if command == "_export":
            return cmd_export(argv[1:])
        return cmd_run(argv[1:] if command == "run" else argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
