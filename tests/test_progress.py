"""Progress (core/progress.py): a bar on a terminal that follows a child's stages, nothing where no one is
watching (stderr not a terminal, --quiet). Real processes on a real pseudo-terminal."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, run_in_terminal

# A parent that runs a child through ChildStages, as bench runs its on-demand export; the child reports three
# stages the way the export stage does. argv[1] == "quiet": the parent asks for no progress.
PARENT = """
import sys
from core.progress import ChildStages, set_quiet
from core.proc import python_module, run_child

set_quiet(sys.argv[1:] == ["quiet"])
CHILD = '''
import time
from core.progress import expect_stages, stage_done, take_channel
take_channel()
expect_stages(3)
for name in ("build", "convert", "parity"):
    time.sleep(0.1)
    stage_done(name)
'''
with ChildStages("export Tiny opset 13") as stages:
    result = run_child([sys.executable, "-c", CHILD], 60, env={**__import__("os").environ, **stages.env},
                       pass_fds=stages.fds)
print("child exit", result.returncode, file=sys.stderr)
"""


def test_a_terminal_shows_the_childs_stages_as_a_bar():
    code, shown = run_in_terminal([sys.executable, "-c", PARENT], cwd=ROOT, timeout=120)
    assert code == 0, shown
    assert "child exit 0" in shown
    assert "export Tiny opset 13" in shown and "3/3" in shown and "parity" in shown, shown


def test_no_progress_under_quiet_or_without_a_terminal():
    code, shown = run_in_terminal([sys.executable, "-c", PARENT, "quiet"], cwd=ROOT, timeout=120)
    assert code == 0 and shown.strip() == "child exit 0", shown
    piped = subprocess.run([sys.executable, "-c", PARENT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert piped.returncode == 0 and piped.stderr.strip() == "child exit 0", piped.stderr


def test_a_sweep_shows_its_cells_on_a_terminal_and_nothing_under_quiet(onnx_artifact, tmp_path):
    from test_sweep import sweep, write_config

    config = write_config(tmp_path, [onnx_artifact], batches=(1, 2))
    code, shown = run_in_terminal([sys.executable, "-m", "bench", "sweep", "--config", str(config)], cwd=ROOT)
    assert code == 0 and "sweep: 100%" in shown and "2/2 [" in shown, shown
    code, shown = run_in_terminal([sys.executable, "-m", "bench", "sweep", "--config", str(config), "--quiet",
                                   "--run-id", "quiet"], cwd=ROOT)
    assert code == 0 and "2 to run" in shown and "sweep: " not in shown, shown
    piped = sweep(config, "--run-id", "piped")  # stderr is not a terminal: a log, CI
    assert piped.returncode == 0 and "2 to run" in piped.stderr and "sweep: " not in piped.stderr, piped.stderr


@pytest.mark.slow
def test_bench_shows_the_stages_of_the_export_it_makes_and_what_it_measures(tmp_path):
    """The main job's on-demand export is a child process: its stages move bench's bar; then a line for the
    measurement. --quiet: nothing of it."""
    args = [sys.executable, "-m", "bench", "--runtime", "null", "--model", "MobileViT_XXS", "--opset", "13",
            "--artifacts", str(tmp_path / "art"), "--results", str(tmp_path / "runs.jsonl"), "--warmup", "0",
            "--iterations", "2", "--duration", "0.01"]
    code, shown = run_in_terminal(args, cwd=tmp_path, timeout=600)
    assert code == 0, shown
    assert "export MobileViT_XXS opset 13" in shown and "/6 [" in shown and "parity" in shown, shown
    assert "measuring MobileViT_XXS on null fp32, batch 1" in shown
    code, shown = run_in_terminal([*args, "--quiet"], cwd=tmp_path, timeout=600)
    assert code == 0 and "export" not in shown and "measuring" not in shown, shown
