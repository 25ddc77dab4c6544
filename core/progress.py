"""Progress on stderr for work that takes more than a couple of seconds: a bar with an estimate where a person is
watching (stderr is a terminal), nothing otherwise (a log file, CI, a sweep's cell, ``--quiet``).

In one process, :func:`bar` is a tqdm bar that hides itself when progress is not shown. Across processes, a
parent runs a child inside :class:`ChildStages`, which hands the child a pipe (its descriptor named in
``PROGRESS_FD_ENV``): the child calls :func:`take_channel` once, then :func:`expect_stages` when it knows how much
work is ahead and :func:`stage_done` as each part finishes, and the parent's bar moves with it.

Nothing here may run inside a timed loop: a bar redraws only when it is told that something finished.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable

from tqdm import tqdm

PROGRESS_FD_ENV = "PADDLE_ONNX_BENCH_PROGRESS_FD"
_QUIET: list[bool] = [False]
_CHANNEL: list[int] = []  # the child's end of its parent's pipe, once taken


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress from this process, whatever stderr is."""
    _QUIET[0] = quiet


def shown() -> bool:
    """Whether progress is shown: stderr is a terminal and nobody asked for quiet."""
    return not _QUIET[0] and sys.stderr.isatty()


def say(line: str) -> None:
    """One line about the step that starts now (for a step with no parts to count), where progress is shown."""
    if shown():
        tqdm.write(line, file=sys.stderr)


def bar(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr, disabled where progress is not shown (``tqdm.write`` still prints)."""
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, disable=not shown(), **kwargs)


def image_bar(total: int, what: str) -> tqdm:
    """A bar counting images of a pass (``bar.update(n)`` after each batch), shown once the pass has run 2 s."""
    return bar(total=total, desc=what, unit="img", delay=2.0, leave=False)


# --- the child's side ---------------------------------------------------------------------------------------

def take_channel() -> None:
    """Keep the pipe a parent's :class:`ChildStages` passed down, and remove its name from the environment so
    this process's own children (which do not hold the descriptor) never write to that number."""
    fd = os.environ.pop(PROGRESS_FD_ENV, "")
    if fd.isdigit():
        _CHANNEL[:] = [int(fd)]


def expect_stages(count: int) -> None:
    """``count`` more stages are ahead (the parent's bar grows its total, from which it estimates the rest)."""
    _send(f"+{count}")


def stage_done(name: str) -> None:
    _send(name)


def _send(line: str) -> None:
    for fd in _CHANNEL:
        try:
            os.write(fd, f"{line}\n".encode())
        except OSError:  # the parent stopped listening: progress is a courtesy, never a failure
            _CHANNEL.clear()


# --- the parent's side --------------------------------------------------------------------------------------

class ChildStages:
    """A bar following a child's stages. Inside the block, start the child with ``env`` added to its
    environment and ``fds`` kept open in it; the bar closes when the block ends (the child has exited)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.env: dict[str, str] = {}
        self.fds: tuple[int, ...] = ()
        self._write: int | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> ChildStages:
        if shown():
            read, self._write = os.pipe()
            self.env, self.fds = {PROGRESS_FD_ENV: str(self._write)}, (self._write,)
            self._bar = bar(total=0, desc=self.desc, unit="stage", leave=False)
            self._reader = threading.Thread(target=self._follow, args=(read,), daemon=True)
            self._reader.start()
        return self

    def _follow(self, read: int) -> None:
        with os.fdopen(read, "r") as lines:
            for line in lines:
                line = line.strip()
                if line.startswith("+") and line[1:].isdigit():
                    self._bar.total += int(line[1:])
                    self._bar.refresh()
                elif line:
                    self._bar.set_postfix_str(line, refresh=False)
                    self._bar.update(1)

    def __exit__(self, *exc) -> None:
        if self._reader is None:
            return
        os.close(self._write)  # with the child gone, the reader sees the end of the pipe
        self._reader.join(timeout=5)
        self._bar.close()
