"""When is a dropped file complete? When its size and mtime have not changed for the quiet
period (``WATCH_QUIET_SECONDS``) and no process has it open for writing.

- Size and mtime: every file seen (an event or a scan) is tracked with the stat last seen
  and the time that stat last changed. When the quiet period has passed since then, the
  file is stat'ed again; a different stat restarts the quiet period. So a slow copy, even
  one over a network share that sends no events, is never taken half-written.
- Open for writing: Linux shows every open file descriptor in ``/proc/<pid>/fd`` and its
  flags in ``/proc/<pid>/fdinfo``; one scan per check gathers the files under
  ``WATCH_DIR`` that some local process holds open for writing (a copy paused longer
  than the quiet period). Processes we may not inspect, and writers on other machines,
  are covered by the quiet period alone. Without ``/proc`` the scan finds nothing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable

Stat = tuple[int, int]  # (size, mtime_ns)


def stat_of(path: str) -> Stat | None:
    """Size and mtime of ``path`` itself (a link is not followed), None when gone."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return found.st_size, found.st_mtime_ns


@dataclass
class Pending:
    stat: Stat
    changed_at: float
    not_before: float = 0.0


class Tracker:
    """Files seen and not yet complete. Not thread-safe: used from the event loop."""

    def __init__(self, quiet: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.clock = clock
        self._pending: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def observe(self, path: str, stat: Stat) -> bool:
        """A file was seen with ``stat``. Returns True when it was not tracked before."""
        known = self._pending.get(path)
        if known is None:
            self._pending[path] = Pending(stat, self.clock())
            return True
        if known.stat != stat:
            known.stat, known.changed_at = stat, self.clock()
        return False

    def touch(self, path: str, delay: float | None = None) -> None:
        """Restart the quiet period (still open for writing), or wait ``delay`` (retry)."""
        known = self._pending.get(path)
        if known is not None:
            known.changed_at = self.clock()
            if delay is not None:
                known.not_before = known.changed_at + delay

    def forget(self, path: str) -> None:
        self._pending.pop(path, None)

    def due(self) -> list[str]:
        """Files whose quiet period has passed since their stat last changed."""
        now = self.clock()
        return [path for path, p in self._pending.items()
                if now - p.changed_at >= self.quiet and now >= p.not_before]

    def settle(self, path: str, stat: Stat | None) -> bool:
        """Compare a due file's fresh stat. True: unchanged for the quiet period. A file
        that vanished is forgotten; one that changed waits another quiet period."""
        if stat is None:
            self.forget(path)
            return False
        if self._pending[path].stat == stat:
            return True
        self.observe(path, stat)
        return False

    def due_at(self, path: str) -> float:
        """When ``path`` (tracked) is due, on the tracker's clock."""
        known = self._pending[path]
        return max(known.changed_at + self.quiet, known.not_before)

    def next_due(self) -> float | None:
        """Seconds until the next file is due (0 if one is), None when nothing is tracked."""
        if not self._pending:
            return None
        now = self.clock()
        soonest = min(max(p.changed_at + self.quiet, p.not_before) for p in self._pending.values())
        return max(0.0, soonest - now)


def open_for_writing(root: str, proc: str = "/proc") -> set[str]:
    """Paths under ``root`` that a local process holds open for writing."""
    prefix = root.rstrip("/") + "/"
    found: set[str] = set()
    for pid in _pids(proc):
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith(prefix) and _writable(f"{proc}/{pid}/fdinfo/{fd}"):
                found.add(target)
    return found


def _pids(proc: str) -> Iterable[str]:
    try:
        return [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []


def _writable(fdinfo: str) -> bool:
    try:
        with open(fdinfo) as handle:
            for line in handle:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & 0o3 in (0o1, 0o2)
    except (OSError, ValueError, IndexError):
        return False
    return False
