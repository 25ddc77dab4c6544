"""Stopping a child process tree: real processes, read back from /proc."""

from __future__ import annotations

import subprocess
import sys
import time

from core.proc import GRACE_ENV, pid_alive, run_child, stop_child

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
