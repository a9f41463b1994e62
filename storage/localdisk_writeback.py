"""Write-behind for local-disk objects (``LocalDiskWriter``, ``LocalResumableWriter``).

Every ``WRITE_BEHIND`` bytes the kernel is asked to start writing the new range out
(Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so the disk works while the body still
arrives and the fsync at commit finds little left to do (1 GiB here: write + fsync
0.38-0.40 s without, 0.22-0.24 s with). What was handed a window before that is waited
for (written out by then, mostly) and dropped from the page cache (``POSIX_FADV_DONTNEED``);
after an fsync, so is the rest of an object of ``WRITE_BEHIND`` bytes or more.

Why drop: nothing here reads an object back soon, and an upload that keeps every byte it
wrote in the page cache fills fresh pages for each GiB. On a VM those pages may have been
handed back to the host (free page reporting) and cost a host fault each when touched
again: on this project's 2-core VM, 1 GiB of 1 MiB ``write`` calls took 1.2-1.8 s into
pages freed a few seconds before, 0.25-0.34 s into recycled ones. Dropping each window
once it is on disk keeps an upload's page cache within three windows, reused from one
window to the next. A validator that reads a large object soon after reads it from the disk.
Small objects (under ``WRITE_BEHIND``) are never dropped. Elsewhere than Linux the fsync
does it all and nothing is dropped.

The calls are advice: their failures are ignored (a write-out failure shows again, and
counts, at the fsync).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

WRITE_BEHIND = 8 * 1024 * 1024
SYNC_FILE_RANGE_WRITE = 2
# wait for write-out already started, start the rest, wait for it all
SYNC_FILE_RANGE_WAIT = 1 | 2 | 4

SyncFileRange = Callable[[int, int, int, int], int]


def _load_sync_file_range() -> SyncFileRange | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


sync_file_range = _load_sync_file_range()


class WriteBehind:
    """Write-behind for one open file, whose bytes from ``start`` on are being written."""

    def __init__(self, fd: int, start: int) -> None:
        self._fd = fd
        self._handed = start  # the write-out of every byte before it has been started
        self._dropped = start  # bytes before it (from ``start``) left the page cache

    def wrote(self, end: int) -> None:
        """The file holds bytes up to ``end``: start writing out a new window when one
        is full, then wait for what was handed a window before and drop it (written out
        by then, mostly: waiting for the window just before cost the writing thread
        0.24-0.34 s per GiB here)."""
        if sync_file_range is None or end - self._handed < WRITE_BEHIND:
            return
        sync_file_range(self._fd, self._handed, end - self._handed, SYNC_FILE_RANGE_WRITE)
        settled = self._handed - WRITE_BEHIND
        if settled > self._dropped:
            sync_file_range(self._fd, self._dropped, settled - self._dropped,
                            SYNC_FILE_RANGE_WAIT)
            self._drop(settled)
        self._handed = end

    def synced(self, end: int) -> None:
        """An fsync made the bytes up to ``end`` durable: drop those of a large object."""
        self._handed = max(self._handed, end)
        if end >= WRITE_BEHIND and end > self._dropped:
            self._drop(end)

    def _drop(self, end: int) -> None:
        fadvise = getattr(os, "posix_fadvise", None)
        if fadvise is not None:
            try:
                fadvise(self._fd, self._dropped, end - self._dropped, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
        self._dropped = end
