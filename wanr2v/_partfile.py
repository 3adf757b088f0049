"""The disk side of a download: hidden ``.part`` files, the writer thread, a caller's file.

A download (``_download``) writes into ``.{name}.{random}.part`` beside its target,
opened exclusively (never someone else's file), flushed (and fsynced, unless turned off)
and renamed into place only when whole; on failure or cancellation the part file is
removed. Part files of the same target untouched for an hour (`STALE_PART_SECONDS`) were
left by a killed process and are swept before a new download of it starts. Writes run
in a worker thread (`writer`) while the next chunks arrive, so the event loop never
waits on the disk.
"""

from __future__ import annotations

import glob
import os
import secrets
import time
from pathlib import Path
from typing import IO, Final

import anyio
import anyio.abc

__all__ = [
    "STALE_PART_SECONDS",
    "TRUNCATE",
    "Offset",
    "discard",
    "finish",
    "open_exclusive",
    "part_path",
    "seekable",
    "sweep_stale_parts",
    "writer",
]

TRUNCATE: Final = "truncate"
"""Sent to `writer` instead of a batch: empty the file (a download starts over)."""


def seekable(fh: IO[bytes]) -> bool:
    """Whether a caller's file object can go back (a restart needs it)."""
    try:
        return bool(fh.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class Offset:
    """A caller's file-like object seen by the writer: a restart goes back to its start."""

    def __init__(self, fh: IO[bytes], start: int) -> None:
        self._fh = fh
        self._start = start
        self.written = 0

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self.written += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if not seekable(self._fh):
            raise OSError("the download had to restart, and the file object is not seekable")
        self.written = 0
        return self._fh.seek(self._start + offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._fh.truncate()


def part_path(target: Path) -> Path:
    """A fresh hidden path beside ``target`` for its body (what `sweep_stale_parts` finds)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")


def open_exclusive(path: Path) -> IO[bytes]:
    """Open a new file for writing; fails if anything is at ``path`` already."""
    return path.open("xb")


def _write_batch(fh: IO[bytes], batch: list[bytes]) -> None:
    for chunk in batch:
        fh.write(chunk)


def _truncate(fh: IO[bytes]) -> None:
    fh.seek(0)
    fh.truncate()


def finish(fh: IO[bytes], fsync: bool) -> None:
    """Flush (and with ``fsync``, to stable storage) and close: ready to be renamed."""
    fh.flush()
    if fsync:
        os.fsync(fh.fileno())
    fh.close()


def discard(fh: IO[bytes], path: Path) -> None:
    """Close and remove a part file that will not be completed."""
    try:
        fh.close()
    finally:
        path.unlink(missing_ok=True)


async def writer(fh: IO[bytes], receive: anyio.abc.ObjectReceiveStream[list[bytes] | str]) -> None:
    """Write batches in a worker thread while the next ones arrive from the network."""
    async with receive:
        async for item in receive:
            if isinstance(item, str):
                await anyio.to_thread.run_sync(_truncate, fh)
            else:
                await anyio.to_thread.run_sync(_write_batch, fh, item)


STALE_PART_SECONDS: Final = 3600.0
"""A ``.part`` file of the same target untouched this long was left by a killed run."""


def sweep_stale_parts(target: Path) -> None:
    """Remove temporary files of ``target`` left behind by a killed process."""
    now = time.time()
    for part in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass
