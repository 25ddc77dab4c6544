"""Stopping a child process tree: real processes, read back from /proc."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from core.proc import GRACE_ENV, pid_alive, run_child, sigterm_interrupts, stop_child

# A child that ignores SIGTERM and starts a grandchild in a session of its own that ignores it too (the shape
# of a cell whose export is stuck in a long C call), then prints the grandchild's pid.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"],
    start_new_session=True)
print(grandchild.pid, flush=True)
time.sleep(120)
"""


def test_a_child_that_ignores_sigterm_is_killed_with_its_detached_grandchild():
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    grandchild = int(proc.stdout.readline())
    started = time.monotonic()
    stop_child(proc, grace_s=0.5)
    assert proc.returncode == -9
    deadline = time.monotonic() + 10
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(grandchild), "the grandchild in its own session outlived the stop"
    assert time.monotonic() - started < 10


def test_each_level_of_children_gets_half_the_grace_of_its_parent():
    result = run_child([sys.executable, "-c", f"import os; print(os.environ['{GRACE_ENV}'])"], timeout=30)
    from core.proc import GRACE_S

    assert float(result.stdout) == GRACE_S / 2


# --- the project's SIGTERM handling stays in the process that asked for it ---------------------------------

def _exit_with_sigterm_handling() -> None:
    os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 3)


def test_a_child_forked_under_the_sigterm_handler_has_the_default_handling():
    """A forked worker inherits the handler but not its purpose: raising Terminated in a pool worker (inside its
    queue lock) once hung the fast tier at Pool shutdown."""
    with sigterm_interrupts():
        worker = multiprocessing.get_context("fork").Process(target=_exit_with_sigterm_handling)
        worker.start()
        worker.join(20)
    assert worker.exitcode == 0


def test_a_sigterm_sent_the_moment_a_child_is_forked_ends_it():
    """Pool.terminate() can signal a worker before it has run a line of its own: that SIGTERM must neither
    trip the inherited handler (whose pending flag the fork's cleanup drops, leaving the worker alive and the
    pool's join waiting forever) nor be lost."""
    with sigterm_interrupts():
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                try:
                    time.sleep(20)
                finally:
                    os._exit(0)
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status


@pytest.mark.timeout(60)
def test_a_pool_forked_under_the_sigterm_handler_shuts_down(tmp_path):
    """Pool.__exit__ terminates its workers with SIGTERM: under the project's handling it still finishes."""
    with sigterm_interrupts():
        for _ in range(5):
            with multiprocessing.get_context("fork").Pool(4) as pool:
                assert pool.map(abs, range(-50, 0)) == list(range(50, 0, -1))


def test_calling_a_cli_main_leaves_the_callers_signal_handlers_as_they_were(capsys):
    from bench.cli import main

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["list", "--json", "null"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "null"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_importing_the_library_installs_no_signal_handler():
    code = ("import signal; before = signal.getsignal(signal.SIGTERM); "
            "import bench.cli, bench.sweep.runner, export.cli, core.proc; "
            "assert signal.getsignal(signal.SIGTERM) is before, signal.getsignal(signal.SIGTERM)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# A process whose SIGTERM handler says so and exits 143, importing paddle with the signals held.
IMPORTS_PADDLE = """
import signal, sys, time
from core.proc import signals_held_for_import
def on_sigterm(signum, frame):
    sys.stderr.write("python handler ran\\n")
    sys.exit(143)
signal.signal(signal.SIGTERM, on_sigterm)
print("importing", flush=True)
with signals_held_for_import():
    import paddle
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.2, 0.7, 1.2])
def test_a_sigterm_during_paddles_import_reaches_python_s_handler(delay_s):
    """Unheld, a SIGTERM inside libpaddle's init became 'ImportError: initialization failed' (exit 1), and one a
    moment later met paddle's own C++ handler ('FatalError: Termination signal', no cleanup)."""
    proc = subprocess.Popen([sys.executable, "-c", IMPORTS_PADDLE], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "importing\n"
    time.sleep(delay_s)  # paddle's import takes 2-3 s here: these land early, midway and late in it
    proc.send_signal(signal.SIGTERM)
    returncode, stderr = proc.wait(timeout=60), proc.stderr.read()
    assert returncode == 143 and "python handler ran" in stderr, stderr[-2000:]
    assert "FatalError" not in stderr and "ImportError" not in stderr, stderr[-2000:]
