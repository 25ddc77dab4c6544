"""Sessions: export the models, run the benchmark sweep, build the report, run the tests."""

import nox

nox.needs_version = ">=2025.02.09"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["export", "tests"]
nox.options.reuse_venv = "yes"

ALL = ".[all]"


@nox.session
def export(session: nox.Session) -> None:
    """Export the models x opsets listed in bench.yaml to ONNX (cached; validated; parity-checked); all of them:
    nox -s export -- --config bench-full.yaml."""
    session.install("-e", ALL)
    session.run("python", "-m", "export", "--config", "bench.yaml", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the bench.yaml sweep, a small one (resumable; one process per cell) into results/; the full matrix:
    nox -s bench -- --config bench-full.yaml."""
    session.install("-e", ALL)
    session.run("python", "-m", "bench", "sweep", "--config", "bench.yaml", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Build the Markdown report and latency-vs-accuracy plots from results/."""
    session.install("-e", ALL)
    session.run("python", "-m", "bench", "report", *(session.posargs or ["results/runs.jsonl"]))


@nox.session
def tests(session: nox.Session) -> None:
    """Run ruff, then the fast tier and the full tier of the test suite (GPU tests skip with their reason)."""
    session.install("-e", ALL)
    session.run("ruff", "check", ".")
    session.run("pytest", "-m", "not slow", *session.posargs)
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session(default=False)
def tests_fast(session: nox.Session) -> None:
    """Run the fast tier only: no paddle, no exports."""
    session.install("-e", ALL)
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint with ruff."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")


@nox.session(default=False)
def gpu(session: nox.Session) -> None:
    """On an NVIDIA GPU machine: install .[gpu] (onnxruntime-gpu, never CPU onnxruntime; TensorRT 10), then run
    benchmarks/gpu_check.sh (GPU tests, the small GPU sweep, its report)."""
    session.install("-e", ".[gpu]")
    session.run("bash", "benchmarks/gpu_check.sh", *session.posargs, external=True)
