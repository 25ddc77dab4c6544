"""Child processes that never outlive their parent, and stop cleanly when the parent is stopped.

Used wherever work runs in a child (a sweep's cells, the export a benchmark starts, paddle2onnx): a crash or
abort in the child cannot take the parent down, and the parent's death (even SIGKILL) takes the child with
it, through Linux's parent-death signal. On timeout or interruption the child's whole process group is sent
SIGTERM first, so it can remove its temporary files, and SIGKILL only if it does not stop in time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
GRACE_S = 20.0  # how long a stopped child may take to clean up before SIGKILL


def _set_parent_death_signal() -> None:
    """Runs in the child between fork and exec: SIGTERM when the parent dies."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's own cleanup must suffice
        pass


@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def error_line(self) -> str:
        return last_error_line(self.stderr)


def last_error_line(stderr: str) -> str:
    """A child's own ``error:`` line if it printed one, else its last non-empty line."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1][len("error: "):]
    return lines[-1] if lines else ""


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_child(cmd: list[str], timeout: float | None, cwd: Path | None = None,
              env: dict[str, str] | None = None, capture_stdout: bool = True) -> ChildResult:
    """Run ``cmd`` in its own process group, bound to this process's life.

    On timeout the child is stopped and ``timed_out`` is set. On KeyboardInterrupt or SystemExit here (Ctrl-C,
    SIGTERM turned into an exit) the child is stopped the same way and the exception propagates.
    """
    # A new session keeps the terminal's Ctrl-C from reaching the child directly: the parent decides, and
    # stops the child with SIGTERM so it cleans up, instead of both racing to handle SIGINT.
    preexec = _set_parent_death_signal if threading.current_thread() is threading.main_thread() else None
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
                            preexec_fn=preexec)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = stop_child(proc)
        return ChildResult(proc.returncode, out or "", err or "", timed_out=True)
    except BaseException:
        stop_child(proc)
        raise
    return ChildResult(proc.returncode, out or "", err or "")


def stop_child(proc: subprocess.Popen, grace_s: float = GRACE_S) -> tuple[str, str]:
    """SIGTERM the child's process group, wait up to ``grace_s``, then SIGKILL; returns its remaining output."""
    _signal_group(proc, signal.SIGTERM)
    try:
        return proc.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("child %d did not stop within %.0f s of SIGTERM; killing it", proc.pid, grace_s)
        _signal_group(proc, signal.SIGKILL)
        return proc.communicate()
    except BaseException:  # a second Ctrl-C while waiting: do not leave it running
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running (not a zombie)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(143)`` so ``finally`` blocks and temporary-file cleanup run, as for Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
