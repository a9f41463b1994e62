"""Proof of life on one machine: a holder keeps an exclusive ``flock`` on a file named by
its id in a directory shared with its peers, for as long as it lives. The kernel releases
a flock when its holder's process dies, and only then, so a peer whose file is missing or
can be locked is gone at once; no grace, no clock. Used by the embedded bus's consumer
members (bus/local.py: a killed member's lease is taken at once instead of after its 10 s)
and by the outbox relays on SQLite (db/presence.py: a killed relay's claims likewise).

The file is locked as a draft and renamed into place, so a file under an id is locked by
its holder from the moment anyone can see it until it dies. Files of holders that are gone,
and drafts of holders that died starting, are removed by whoever finds them.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

ID = re.compile(r"[0-9a-f]{32}")
DRAFT_AGE = 60.0  # a draft older than this was left by a holder that died starting


class LockFile:
    """This holder's locked file in ``directory`` (``hold``), under ``id``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.id = uuid.uuid4().hex
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self) -> bool:
        """Take the file (and remove what gone holders left); False when it cannot be
        made (a read-only directory, say): the caller then goes without."""
        try:
            self.directory.mkdir(exist_ok=True)
            draft = self.directory / f".{self.id}.draft"
            fd = os.open(draft, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(draft, self.directory / self.id)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            logger.warning("lock file in %s not taken: %s", self.directory, exc)
            return False
        self._fd = fd
        self._sweep()
        return True

    def _sweep(self) -> None:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if name != self.id and ID.fullmatch(name):
                gone(self.directory, name)  # removes the file of one that is gone
            elif name.startswith(".") and name.endswith(".draft"):
                try:
                    if time.time() - (self.directory / name).stat().st_mtime > DRAFT_AGE:
                        _unlink(self.directory / name)
                except OSError:
                    pass

    def release(self) -> None:
        """Remove the file and let go of its lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlink(self.directory / self.id)
            os.close(fd)


def gone(directory: Path, holder: str) -> bool:
    """Whether the holder ``holder`` is gone: its file missing or free (and then removed).
    A name that is not a holder's id, or a file that cannot be probed, says nothing: False."""
    if not ID.fullmatch(holder):
        return False
    path = directory / holder
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # held (BlockingIOError), or cannot tell
        return False
    finally:
        os.close(fd)
    _unlink(path)
    return True


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
