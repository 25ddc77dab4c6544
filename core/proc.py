"""Child processes that never outlive their parent, and stop cleanly when the parent is stopped.

Used wherever work runs in a child (a sweep's cells, the export a benchmark starts, paddle2onnx): a crash or
abort in the child cannot take the parent down, and the parent's death (even SIGKILL) takes the child with
it, through Linux's parent-death signal (SIGTERM, so the child still removes its temporary files). The child
runs in its own session: a terminal's Ctrl-C or a signal to the parent's process group reaches the parent
only, which then stops the child. On timeout or interruption the child's whole process group is sent SIGTERM
first, so it can clean up, and SIGKILL only if it does not stop in time.

SIGTERM (``kill PID``, a CI runner stopping a job) is turned into :class:`Terminated`, a KeyboardInterrupt:
every path that handles Ctrl-C (stop the child, keep finished work, say how to resume) handles it too.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# How long a stopped child may take to clean up before SIGKILL. Each level of children gets half its parent's
# grace, so a stuck grandchild is killed by its own parent (which then removes its temporary files) before the
# grandparent's patience runs out.
GRACE_ENV = "PADDLE_ONNX_BENCH_GRACE_S"
GRACE_S = float(os.environ.get(GRACE_ENV) or 20.0)


class Terminated(KeyboardInterrupt):
    """SIGTERM received: unwinds like Ctrl-C (a KeyboardInterrupt) but exits with 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_STOPPING: list[int] = []  # the last SIGTERM our handler raised Terminated for in this process (terminated_by)


def interrupt_on_sigterm() -> None:
    """Raise :class:`Terminated` in the main thread on SIGTERM, so ``finally`` blocks, child processes'
    shutdown and temporary-file cleanup run as they do for Ctrl-C. For a process's entry point; a function
    that others may call (``main`` of a CLI) uses :func:`sigterm_interrupts`, which puts the old handler back.

    Only in this process: a child forked from it (a ``multiprocessing`` worker) gets back the handling from
    before, from the fork on (by default, SIGTERM ends it). Raising Terminated in a pool worker would unwind it
    from inside its queue lock, leaving its siblings waiting forever."""
    stopping = []

    def handler(signum, frame):
        # Once: a repeated SIGTERM (the kernel sends the parent-death signal once per exiting thread of the
        # parent) raised inside the cleanup of the first would cut that cleanup short.
        if stopping:
            log.info("SIGTERM again while stopping: ignored")
            return
        stopping.append(signum)
        _STOPPING[:] = [signum]
        raise Terminated(signum)

    handler.before = signal.getsignal(signal.SIGTERM)
    if not _FORK_HOOKS:
        os.register_at_fork(before=_fork_starts, after_in_parent=_fork_ended, after_in_child=_child_forked)
        _FORK_HOOKS.append(True)
    signal.signal(signal.SIGTERM, handler)


def terminated_by() -> int | None:
    """The signal a :class:`Terminated` was raised for, if any: C code that checks for signals while it waits
    (Ray's) may hand it on as a plain KeyboardInterrupt."""
    return _STOPPING[0] if _STOPPING else None


# Around a fork while our handler is in place, SIGTERM is blocked in the forking thread: a SIGTERM that reaches
# the child before it has put the old handling back stays pending instead of tripping our handler's flag, which
# the fork's cleanup then drops (a pool worker terminated at once would live on, blocked on its queue).
_FORK_HOOKS: list[bool] = []
_MASK_BEFORE_FORK: list[set] = []


def _ours() -> bool:
    return hasattr(signal.getsignal(signal.SIGTERM), "before")


def _fork_starts() -> None:
    if _ours():
        _MASK_BEFORE_FORK.append(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))


def _fork_ended() -> None:
    if _MASK_BEFORE_FORK:
        signal.pthread_sigmask(signal.SIG_SETMASK, _MASK_BEFORE_FORK.pop())


def _child_forked() -> None:
    """Put back the SIGTERM handling that :func:`interrupt_on_sigterm` replaced, then let a pending SIGTERM in."""
    _STOPPING.clear()
    try:
        if _ours():
            before = signal.getsignal(signal.SIGTERM).before
            signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)
    finally:  # never leave the child deaf to SIGTERM
        _fork_ended()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """:func:`interrupt_on_sigterm` for the duration of the block; the handlers in place before come back
    after it, so calling a CLI's ``main`` in-process (a test) leaves that process's signal handling as it was."""
    with keep_signal_handlers():
        interrupt_on_sigterm()
        yield


def exit_code_of(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return interrupt.exit_code if isinstance(interrupt, Terminated) else 128 + signal.SIGINT


def _parent_death_signal(parent: int):
    """What the child runs between fork and exec: SIGTERM when the parent dies, even by SIGKILL."""

    def set_it() -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the parent's own cleanup must suffice
            return
        if os.getppid() != parent:  # the parent died before prctl took effect: nobody would signal us
            os._exit(128 + signal.SIGTERM)

    return set_it


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
    """``signal SIGABRT``, ``exit code 143 (SIGTERM)``, ``exit code 1``."""
    if code < 0:
        return f"signal {_signal_name(-code)}"
    if 128 < code < 128 + 65:  # the shell's convention for a signal the process handled and exited on
        return f"exit code {code} ({_signal_name(code - 128)})"
    return f"exit code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_child(cmd: list[str], timeout: float | None, cwd: Path | None = None,
              env: dict[str, str] | None = None, capture_stdout: bool = True,
              pass_fds: tuple[int, ...] = ()) -> ChildResult:
    """Run ``cmd`` in its own process group, bound to this process's life.

    On timeout the child is stopped and ``timed_out`` is set. On KeyboardInterrupt or SystemExit here (Ctrl-C,
    SIGTERM) the child is stopped the same way and the exception propagates. ``pass_fds`` stay open in the
    child (a lock it must hold as long as it lives).
    """
    # A new session keeps the terminal's Ctrl-C from reaching the child directly: the parent decides, and
    # stops the child with SIGTERM so it cleans up, instead of both racing to handle SIGINT.
    # The parent-death signal is tied to the thread that forks; only the main thread lives as long as we do.
    main = threading.current_thread() is threading.main_thread()
    preexec = _parent_death_signal(os.getpid()) if main else None
    env = {**(os.environ if env is None else env), GRACE_ENV: f"{GRACE_S / 2:g}"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
                            preexec_fn=preexec, pass_fds=pass_fds)
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
        _kill_tree(proc)
        return proc.communicate()
    except BaseException:  # a second Ctrl-C while waiting: do not leave it running
        _kill_tree(proc)
        proc.wait()
        raise


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the child's group and the groups of all its descendants. A grandchild in a session of its own
    (the export a cell started) is not in the child's group, and once the child is dead it would only get the
    parent-death SIGTERM, which a process stuck in a long C call does not act on: it must be killed now."""
    groups = {proc.pid}
    for pid in _descendants(proc.pid):
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    """Pids whose parent chain leads to ``root``, read from /proc (empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Restore Python's SIGTERM/SIGINT handlers after the block: paddle installs C++ handlers on import that
    end the process without unwinding (no cleanup, no message) and would replace ours."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for number, handler in handlers.items():
                if handler is not None:
                    signal.signal(number, handler)


@contextlib.contextmanager
def signals_held_for_import() -> Iterator[None]:
    """Hold SIGTERM/SIGINT for the block (paddle's import) and deliver them to Python's handlers after it.

    paddle installs C++ handlers part-way through its import that end the process without unwinding (an export's
    temporary folder stays behind, no message), and a Python handler that runs inside libpaddle's module init
    turns its exit into ``ImportError: initialization failed``. Held, a signal waits for the import (a few
    seconds at most), the handlers in place before it come back, and then it arrives as usual.
    """
    main = threading.current_thread() is threading.main_thread()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT}) if main else None
    try:
        with keep_signal_handlers():
            yield
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def processes_holding(path: Path) -> list[int]:
    """Pids of this user's processes (other than this one) with ``path`` open, read from /proc."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                st = os.stat(fd)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.append(int(entry.name))
                break
    return sorted(found)


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

