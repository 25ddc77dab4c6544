"""One sweep per results file at a time: an exclusive lock held by the sweep and by every cell it starts.

The lock is ``flock`` on ``<results>.lock``. Each child of the sweep (cells, exports) inherits the locked
descriptor, so the lock outlives a sweep killed with SIGKILL for as long as one of its children is still
stopping. A second sweep, or a resume started at once, therefore never runs beside a live sweep or beside
the orphaned cell of a dead one: it is refused with the owner's pid, or, when the owner is gone, waits for
the owner's children to finish stopping (they get SIGTERM with their parent's death) before it reads which
cells are done. That is what keeps a cell from ever being recorded twice.

The lock file holds the owner's pid and command line (for the message only: the flock is what counts) and
is removed when the sweep ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from core.proc import pid_alive, processes_holding

ORPHAN_WAIT_S = 60.0  # how long to wait for the children of a dead sweep (they stop within core.proc.GRACE_S)


class SweepBusy(RuntimeError):
    """Another sweep (or what is left of one) holds the results file."""


def lock_path(results: Path) -> Path:
    return Path(results).with_name(Path(results).name + ".lock")


class SweepLock:
    """``with SweepLock(results) as lock:`` ... pass ``lock.fd`` to every child (``run_child(pass_fds=...)``)."""

    def __init__(self, results: Path, command: str = "", orphan_wait_s: float = ORPHAN_WAIT_S) -> None:
        self.results = Path(results)
        self.command = command  # how the owner was started, for the message a second sweep prints
        self.path = lock_path(self.results)
        self.orphan_wait_s = orphan_wait_s
        self.fd: int | None = None

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.orphan_wait_s
        announced, scanned = False, 0.0
        while True:
            fd = self._try_lock()
            if fd is not None:
                self.fd = fd
                owner = {"pid": os.getpid(), "command": self.command, "started": time.time()}
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
                return
            if time.monotonic() - scanned < 1.0:  # reading every process's descriptors costs: once a second
                time.sleep(0.1)
                continue
            scanned = time.monotonic()
            owner = self._owner()
            pid = owner.get("pid")
            holders = processes_holding(self.path)
            # A live owner that does not hold the file is a recycled pid (when we can see holders at all).
            if isinstance(pid, int) and pid_alive(pid) and (pid in holders or not holders):
                command = f" ({owner['command']})" if owner.get("command") else ""
                raise SweepBusy(f"results file {self.results} is in use by the sweep with pid {pid}{command}; "
                                f"wait for it to finish, or stop it (kill {pid}) and rerun to resume")
            if time.monotonic() >= deadline:
                which = ", ".join(map(str, holders)) or "unknown processes"
                raise SweepBusy(f"results file {self.results} is still locked by process(es) {which}, left by "
                                f"a sweep (pid {pid}) that is gone; they did not stop within "
                                f"{self.orphan_wait_s:.0f} s: stop them (kill {' '.join(map(str, holders))}) "
                                "and rerun")
            if not announced:
                print(f"waiting for the cells of a stopped sweep (pid {pid}) to exit: "
                      f"{', '.join(map(str, holders)) or '?'}", file=sys.stderr)
                announced = True

    def _try_lock(self) -> int | None:
        """The locked descriptor of the file now at ``path``, or None when another process holds it."""
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            # The previous owner may have removed the file between our open and our lock: then we hold a lock
            # on a file nobody else can find; start again on the one at ``path``.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: a waiter then finds the file gone and makes a new one
        os.close(self.fd)
        self.fd = None
