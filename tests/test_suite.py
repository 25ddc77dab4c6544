"""The test suite's own promises: no test can hang (a timeout per tier, from pyproject.toml), and the README
and noxfile state no test counts or durations that no command regenerates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib

import pytest
from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INI = PYPROJECT["tool"]["pytest"]["ini_options"]


def test_every_tier_has_a_timeout_and_the_plugin_is_pinned():
    assert "pytest-timeout==2.4.0" in PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert 0 < float(INI["timeout"]) < float(INI["slow_timeout"])
    assert INI["timeout_method"] == "thread"  # ends a hang in C code too


@pytest.mark.parametrize(("marker", "limit"), [("", "timeout"), ("@pytest.mark.slow", "slow_timeout"),
                                               ("@pytest.mark.gpu", "slow_timeout")])
def test_a_hanging_test_fails_within_its_tiers_limit(tmp_path, marker, limit):
    """A test of either tier that hangs is stopped at its tier's limit (here set to 1 s), loudly."""
    (tmp_path / "test_hang.py").write_text(f"import time\nimport pytest\n\n\n{marker}\ndef test_hangs():\n"
                                           "    time.sleep(60)\n")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "conftest", "-p", "no:cacheprovider", "-o", f"{limit}=1", str(tmp_path / "test_hang.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=50,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])})
    assert proc.returncode != 0, proc.stdout
    assert "+ Timeout +" in proc.stdout and "time.sleep(60)" in proc.stdout, proc.stdout + proc.stderr
    assert time.monotonic() - started < 30  # stopped at the limit, long before the sleep ends


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def test_readme_and_noxfile_state_no_test_counts_or_durations():
    """Counts and seconds of a test run go stale with every test added and every machine; nothing regenerates
    them, so they are not written down (pytest prints its own)."""
    texts = {"README.md, Tests": _section((ROOT / "README.md").read_text(), "## Tests"),
             "noxfile.py": (ROOT / "noxfile.py").read_text()}
    figure = re.compile(r"\b\d+ tests\b|\b\d+(\.\d+)? ?(s|seconds|minutes?|min)\b")
    for where, text in texts.items():
        assert not figure.search(text), f"{where}: {figure.search(text).group(0)!r}"


def test_what_the_tools_write_into_the_checkout_by_default_is_git_ignored():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to ignore files from")
    defaults = ["artifacts/LeViT_128S/seeded/opset17-bdyn/model.onnx", "results/runs.jsonl",
                "results/report/report.md", "results/explain/LeViT_128S-o17-ov-int8/explain.json"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *defaults], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.split() == defaults, proc.stderr
