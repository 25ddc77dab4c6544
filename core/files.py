"""Atomic file I/O: every artifact, record and report is written so a reader sees the old file or the whole
new one, never half of it, and an interrupted writer leaves no temporary file behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; artifacts and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """A binary file object whose content replaces ``path`` only when the block ends without an error
    (for writers that want a file object, such as matplotlib's ``savefig``)."""
    buffer = io.BytesIO()
    yield buffer
    write_bytes_atomic(path, buffer.getvalue())


def append_line(path: Path, line: str) -> None:
    """Append one line in a single ``os.write`` on an ``O_APPEND`` descriptor, then fsync.

    Concurrent writers never interleave, and a writer killed mid-line (disk full) cannot glue the next line
    onto its fragment: a missing final newline is restored first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = (line if line.endswith("\n") else line + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload
        written = os.write(fd, payload)
        if written != len(payload):
            raise OSError(f"short write to {path}: {written} of {len(payload)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def check_appendable(path: Path) -> None:
    """Raise ``OSError`` now if ``path`` cannot be appended to, before any time is spent producing it. Creates
    nothing: the file and its folders are made by the first append."""
    path = Path(path)
    if path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    else:
        check_writable_dir(path.parent)


def check_writable_dir(folder: Path) -> None:
    """Raise ``OSError`` if files cannot be created in ``folder``. Creates nothing: a folder that is not there
    yet is checked through the nearest one above it that is, where it would be made, so a check before work
    that then fails leaves no empty folder behind."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    with tempfile.TemporaryFile(dir=existing):
        pass


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those above it that do not exist yet, innermost first: what making it would create."""
    missing = []
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing
