"""Processing steps between a received file and what is ingested, as in the Octo pipeline:
decrypt ``.gpg`` (python-gnupg and the ``gpg`` binary), unpack ``.tar[.gz]``/``.tgz``
members, gunzip ``.gz``. Shared by the intakes that take files whole (the watcher's rules,
``watcher.rules``; the pull providers' ``steps``, ``pull.config``): which steps a file gets
is the caller's choice.

The input is a path or a file already open for reading at its start (the watcher opens
it without following links, ``watcher.files``), read once. Every output goes to a
private work directory the caller names and removes afterwards. A
file these steps cannot handle raises ``StepError`` with a stable code (``bad_archive``,
``decrypt_failed``, ``too_large``, ``archive_bomb``, ``empty_archive``): the caller records
it as failed (the watcher moves it to ``Failed/``). Errors writing the work directory (disk
full) are plain ``OSError``: the file is retried later.

Hidden and temporary names (``is_ignored``) are never ours: any path component starting
with ``.``, and names ending in ``~``, ``.part``, ``.partial``, ``.tmp``, ``.crdownload`` or
starting with ``~$``: what copy tools write before renaming into place. Tar members with
such names are skipped.

Limits (``Limits``), against archive bombs: every output is at most ``max_bytes``
(``MAX_LENGTH``, as for HTTP uploads; gpg stops at it too, ``--max-output``); what one
file unpacks to, in total, is at most ``max_ratio`` times its own size plus
``RATIO_FLOOR`` (1 MiB, so that small, very compressible files pass); an archive has at
most ``max_members`` entries. Decompression is streamed in 1 MiB blocks and stops as soon
as a limit is passed, so neither memory nor disk holds more than the limits allow.
"""
from __future__ import annotations

import gzip
import logging
import os
import posixpath
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Collection

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
RATIO_FLOOR = 1024 * 1024
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
GPG_SUFFIXES = (".gpg", ".pgp")
_ARCHIVE_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError)
Input = Path | BinaryIO  # a path, or a file open for reading at its start
STEPS = ("decrypt", "untar", "gunzip")
TEMP_SUFFIXES = ("~", ".part", ".partial", ".tmp", ".crdownload")


def is_ignored(relative: str) -> bool:
    """Hidden and temporary files: not (yet) ours."""
    parts = relative.split("/")
    if any(part.startswith(".") for part in parts):
        return True
    name = parts[-1].lower()
    return name.endswith(TEMP_SUFFIXES) or name.startswith("~$")


class StepError(Exception):
    """This file cannot be processed; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_ratio: float = 200.0
    max_members: int = 10000


@dataclass(frozen=True)
class Prepared:
    """One payload to ingest: its name (relative to where it came from) and where its
    bytes are."""

    name: str
    path: Input  # the input itself (as it was given to ``prepare``) or a work file
    steps: tuple[str, ...] = ()


class Budget:
    """Counts what one input unpacks to, against the limits."""

    def __init__(self, packed_size: int, limits: Limits) -> None:
        self.limits = limits
        self.allowed = limits.max_ratio * packed_size + RATIO_FLOOR
        self.total = 0

    def spend(self, output_size: int, count: int) -> None:
        """``count`` more bytes were produced; ``output_size`` is the current output's."""
        self.total += count
        if output_size > self.limits.max_bytes:
            raise StepError("too_large", f"unpacks to more than {self.limits.max_bytes} bytes")
        if self.total > self.allowed:
            raise StepError("archive_bomb", f"unpacks to more than {self.limits.max_ratio:g} "
                                            "times its size")


class Decryptor:
    """python-gnupg over the ``gpg`` binary, with the keyring in ``home`` (GPG_HOME)."""

    def __init__(self, home: Path | None, passphrase: str | None) -> None:
        import gnupg  # only rules with decrypt need it

        self.passphrase = passphrase
        try:
            self.gpg = gnupg.GPG(gnupghome=str(home) if home else None)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"rules with decrypt need the gpg binary and GPG_HOME: {exc}") from exc

    def decrypt(self, source: Input, target: Path, max_bytes: int) -> None:
        given = str(source) if isinstance(source, Path) else source
        result = self.gpg.decrypt_file(given, passphrase=self.passphrase,
                                       output=str(target),
                                       extra_args=["--max-output", str(max_bytes)])
        if not result.ok or result.returncode:
            target.unlink(missing_ok=True)
            if "max-output" in (result.stderr or ""):
                raise StepError("too_large", f"decrypts to more than {max_bytes} bytes")
            said = [line for line in (result.stderr or "").splitlines() if line.startswith("gpg:")]
            detail = said[-1][5:] if said else result.status or "failed"
            raise StepError("decrypt_failed", f"gpg could not decrypt: {detail}")


def _read(reader: IO[bytes], size: int) -> bytes:
    try:
        return reader.read(size)
    except _ARCHIVE_ERRORS as exc:
        raise StepError("bad_archive", f"corrupt or truncated: {exc or type(exc).__name__}") from exc


def _copy(reader: IO[bytes], target: Path, budget: Budget) -> None:
    size = 0
    with open(target, "wb") as out:
        while block := _read(reader, CHUNK):
            size += len(block)
            budget.spend(size, len(block))
            out.write(block)


def size_of(source: Input) -> int:
    return source.stat().st_size if isinstance(source, Path) else os.fstat(source.fileno()).st_size


def gunzip(source: Input, target: Path, limits: Limits) -> None:
    budget = Budget(size_of(source), limits)
    with gzip.open(source, "rb") as reader:
        _copy(reader, target, budget)  # type: ignore[arg-type]


def _member_name(raw: str) -> str:
    name = posixpath.normpath(raw.replace("\\", "/")).lstrip("/")
    if name in ("", ".") or name == ".." or name.startswith("../"):
        raise StepError("bad_archive", f"member name {raw!r} leaves the archive")
    return name


def untar(source: Input, work: Path, limits: Limits) -> list[tuple[str, Path]]:
    """Unpack the regular members (hidden and temporary ones skipped) into ``work``."""
    budget = Budget(size_of(source), limits)
    members: list[tuple[str, Path]] = []
    opened = {"name": source} if isinstance(source, Path) else {"fileobj": source}
    try:
        with tarfile.open(mode="r|*", **opened) as archive:
            for count, member in enumerate(archive, 1):
                if count > limits.max_members:
                    raise StepError("archive_bomb", f"more than {limits.max_members} entries")
                if not member.isreg() or is_ignored(_member_name(member.name)):
                    continue
                reader = archive.extractfile(member)
                assert reader is not None
                target = work / f"member-{count}"
                _copy(reader, target, budget)
                members.append((_member_name(member.name), target))
    except _ARCHIVE_ERRORS as exc:
        raise StepError("bad_archive", f"not a readable tar archive: {exc}") from exc
    if not members:
        raise StepError("empty_archive", "the archive holds no regular file")
    return members


def _strip(name: str, suffixes: tuple[str, ...]) -> str | None:
    lower = name.lower()
    return next((name[: -len(s)] for s in suffixes if lower.endswith(s)), None)


def prepare(source: Input, name: str, steps_asked: Collection[str], work: Path,
            limits: Limits, decryptor: Decryptor | None) -> list[Prepared]:
    """Apply ``steps_asked`` (of ``STEPS``) to ``source`` (named ``name``), while the name
    ends with their suffixes, outermost first; returns what to ingest."""
    current: Input = source
    steps: list[str] = []
    while True:
        if "decrypt" in steps_asked and (stripped := _strip(name, GPG_SUFFIXES)):
            current = _decrypt(current, work, limits, decryptor)
            name, step = stripped, "decrypt"
        elif "untar" in steps_asked and (stripped := _strip(name, TAR_SUFFIXES)):
            steps.append("untar")
            return [Prepared(f"{stripped}/{member}", path, tuple(steps))
                    for member, path in untar(current, work, limits)]
        elif "gunzip" in steps_asked and (stripped := _strip(name, (".gz",))):
            target = work / uuid.uuid4().hex
            gunzip(current, target, limits)
            current, name, step = target, stripped, "gunzip"
        else:
            return [Prepared(name, current, tuple(steps))]
        steps.append(step)


def _decrypt(source: Input, work: Path, limits: Limits, decryptor: Decryptor | None) -> Path:
    if decryptor is None:
        raise StepError("decrypt_failed", "no GPG keyring configured (GPG_HOME)")
    target = work / uuid.uuid4().hex
    decryptor.decrypt(source, target, limits.max_bytes)
    size = target.stat().st_size
    Budget(size_of(source), limits).spend(size, size)
    return target
