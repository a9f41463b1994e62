"""Files under ``WATCH_DIR``, read and moved without following a link anywhere, and names
checked before anything is done with them.

- ``open_source``: the directories on the way are opened one by one from ``WATCH_DIR``'s
  descriptor with ``O_DIRECTORY | O_NOFOLLOW``; the file itself is looked at first
  (``lstat``: a FIFO, socket, device, symbolic link or hard link is never opened, since
  opening a FIFO without a writer blocks and a device may act on being opened), then
  opened with ``O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`` and checked again with ``fstat``: a
  regular file with one link, the inode that ``lstat`` saw. Anything else raises
  ``NotRegular`` (a ``StepError``, code ``not_regular_file``): the file goes to ``Failed/``.
  A link, whatever it points to (a file or a directory, inside ``WATCH_DIR`` or outside),
  is never read through; so is a second name of a file kept elsewhere (a hard link).
- ``move``: to ``Processed/`` or ``Failed/``, keeping the relative path, through directory
  descriptors as well (a link planted in ``Processed/`` or ``Failed/`` is not followed
  either), with ``-2``, ``-3``... before the extension when the name is taken.
- ``check_name``: a name that is not valid UTF-8, holds control characters (a newline...),
  or whose last part is longer than ``MAX_NAME_BYTES`` (232: what fits in the file
  system's 255 bytes with ``-NNNNNN``, ``.error.json`` and the temporary ``.….tmp``)
  raises ``StepError`` (``bad_name``, ``name_too_long``); ``safe_name`` is the name it gets
  in ``Failed/``: such bytes and characters as ``%XX``, parts shortened to fit with a hash
  of the original, which its ``.error.json`` records.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from core.steps import StepError

NAME_MAX = 255
SUFFIX_ROOM = len("-999999") + len(".") + len(".error.json") + len(".tmp")
MAX_NAME_BYTES = NAME_MAX - SUFFIX_ROOM
FREE_NAMES = 1_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotRegular(StepError):
    """Not a regular file of its own: never read."""

    def __init__(self, what: str) -> None:
        super().__init__("not_regular_file", f"{what}, not a regular file: never read")
        self.what = what


def kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO"...), or None for a regular file."""
    return next((name for test, name in _KINDS if test(mode)), None)


Version = tuple[int, int, int, int, int]  # (device, inode, size, mtime_ns, ctime_ns)


def version(found: os.stat_result) -> Version:
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


@dataclass
class Source:
    """A file opened by ``open_source``; ``before`` is its version when it was opened."""

    handle: BinaryIO
    before: Version

    @property
    def size(self) -> int:
        return self.before[2]

    def unchanged(self) -> bool:
        """Still the version it was when opened (size, mtime and ctime)."""
        return version(os.fstat(self.handle.fileno())) == self.before

    def close(self) -> None:
        self.handle.close()


def _parts(relative: str) -> list[str]:
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"not a plain relative path: {relative!r}")
    return parts


def _open_dir(root: int, parts: list[str], create: bool = False) -> int:
    """A descriptor of ``root/parts...``; no part may be a link. The caller closes it."""
    fd = os.dup(root)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Root:
    """``WATCH_DIR`` opened as a directory (the configured path may itself be a link)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _parent(root: int, relative: str) -> tuple[int, str]:
    """A descriptor of the directory holding ``relative``, and its last part. A directory on
    the way that is a link (or not a directory) raises ``NotRegular``."""
    *dirs, name = _parts(relative)
    try:
        return _open_dir(root, dirs), name
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise NotRegular("a path through a symbolic link or a non-directory") from exc


def open_source(root: str | os.PathLike[str], relative: str) -> Source | None:
    """Open ``relative`` under ``root`` for reading (see the module doc); None when it is
    gone or is a directory. ``PermissionError`` when it may not be read."""
    with _Root(root) as root_fd:
        try:
            parent, name = _parent(root_fd, relative)
        except FileNotFoundError:
            return None
        try:
            return _open_in(parent, name)
        except FileNotFoundError:
            return None
        finally:
            os.close(parent)


def _open_in(parent: int, name: str) -> Source:
    seen = os.stat(name, dir_fd=parent, follow_symlinks=False)
    _check_regular(seen)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise NotRegular("not openable as a file (a link or a special file)") from exc
    try:
        opened = os.fstat(fd)
        _check_regular(opened)
        if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
            raise NotRegular("replaced while it was opened")
        os.set_blocking(fd, True)
        return Source(os.fdopen(fd, "rb"), version(opened))
    except BaseException:
        os.close(fd)
        raise


def _check_regular(found: os.stat_result) -> None:
    what = kind(found.st_mode)
    if what == "a directory":  # not a file to take (its files are): as if gone
        raise FileNotFoundError("a directory")
    if what is not None:
        raise NotRegular(what)
    if found.st_nlink > 1:
        raise NotRegular(f"a hard link ({found.st_nlink} names)")


def current(root: str | os.PathLike[str], relative: str) -> Version | None:
    """The version of ``relative`` now (``lstat``, no link followed), None when gone."""
    with _Root(root) as root_fd:
        try:
            parent, name = _parent(root_fd, relative)
        except (FileNotFoundError, NotRegular):
            return None
        try:
            return version(os.stat(name, dir_fd=parent, follow_symlinks=False))
        except FileNotFoundError:
            return None
        finally:
            os.close(parent)


def candidates(name: str) -> Iterator[str]:
    """``name``, then the names ``move`` gives when it is taken: ``x-2.obj``, ``x-3.obj``..."""
    return _candidates(name)


def _candidates(name: str) -> Iterator[str]:
    yield name
    stem, dot, ext = name.partition(".")
    for n in range(2, FREE_NAMES):
        yield f"{stem}-{n}{dot}{ext}"


def _free(folder: int, name: str) -> str:
    for candidate in _candidates(name):
        try:
            os.stat(candidate, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return candidate
    raise FileExistsError(name)


def move(root: str | os.PathLike[str], relative: str, folder: str, target: str | None = None,
         expect: Version | None = None, sidecar: bytes | None = None,
         suffix: str = ".error.json") -> str | None:
    """Move ``relative`` to ``folder/target`` (``target`` defaults to ``relative``) under a
    free name; returns the new path relative to ``root``, or None when ``expect`` is given
    and the file is no longer that version. ``sidecar`` is written first, atomically, as
    ``<new name><suffix>`` (and removed again when the file is gone)."""
    with _Root(root) as root_fd:
        source, name = _parent(root_fd, relative)
        try:
            if expect is not None and version(
                    os.stat(name, dir_fd=source, follow_symlinks=False)) != expect:
                return None
            *dirs, wanted = _parts(target or relative)
            destination = _open_dir(root_fd, [folder, *dirs], create=True)
            try:
                free = _free(destination, wanted)
                if sidecar is not None:
                    _write_sidecar(destination, f"{free}{suffix}", sidecar)
                try:
                    os.rename(name, free, src_dir_fd=source, dst_dir_fd=destination)
                except FileNotFoundError:
                    if sidecar is not None:
                        os.unlink(f"{free}{suffix}", dir_fd=destination)
                    raise
            finally:
                os.close(destination)
        finally:
            os.close(source)
    return "/".join((folder, *dirs, free))


def write_report(root: str | os.PathLike[str], folder: str, relative: str, suffix: str,
                 data: bytes) -> str:
    """Write ``data`` as ``folder/<relative><suffix>`` under a free name, atomically;
    returns its path relative to ``root``."""
    with _Root(root) as root_fd:
        *dirs, wanted = _parts(relative)
        destination = _open_dir(root_fd, [folder, *dirs], create=True)
        try:
            free = _free(destination, wanted + suffix)
            _write_sidecar(destination, free, data)
        finally:
            os.close(destination)
    return "/".join((folder, *dirs, free))


def reports(root: str | os.PathLike[str], folder: str, relative: str,
            suffix: str) -> list[bytes]:
    """The contents of the ``<suffix>`` files in the directory of ``folder/relative``."""
    found = []
    with _Root(root) as root_fd:
        *dirs, _ = _parts(relative)
        try:
            directory = _open_dir(root_fd, [folder, *dirs])
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            for name in os.listdir(directory):
                if name.endswith(suffix):
                    try:
                        source = _open_in(directory, name)
                    except (OSError, NotRegular):
                        continue
                    with source.handle:
                        found.append(source.handle.read(1024 * 1024))
        finally:
            os.close(directory)
    return found


def _write_sidecar(folder: int, name: str, data: bytes) -> None:
    temp = f".{name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=folder)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)


# names -------------------------------------------------------------------------------------

def _raw(text: str) -> bytes:
    return os.fsencode(text)  # the name's own bytes (surrogateescape)


def display(relative: str) -> str:
    """The name as text; bytes that are not UTF-8 as ``\\xNN``."""
    return _raw(relative).decode("utf-8", "backslashreplace")


def _unsafe(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029" or (
        0xD800 <= code <= 0xDFFF)


def check_name(relative: str) -> None:
    """Raise ``StepError`` for a name the watcher does not ingest (see the module doc)."""
    if any(0xDC80 <= ord(char) <= 0xDCFF for char in relative):
        raise StepError("bad_name", "the name is not valid UTF-8")
    if any(_unsafe(char) for char in relative):
        raise StepError("bad_name", "the name holds control characters")
    last = relative.rsplit("/", 1)[-1]
    if len(last.encode()) > MAX_NAME_BYTES:
        raise StepError("name_too_long", f"the name is longer than {MAX_NAME_BYTES} bytes")


def _escape_part(part: str) -> str:
    out = []
    for char in part:
        if not _unsafe(char):
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(f"%{ord(char) - 0xDC00:02X}")
        else:
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass")))
    return "".join(out)


def _fit(part: str, limit: int) -> str:
    if len(part.encode()) <= limit:
        return part
    tag = "-" + hashlib.sha256(_raw(part)).hexdigest()[:12]
    stem, dot, ext = part.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = part, ""
    room = limit - len(tag.encode()) - len((dot + ext).encode() if ext else b"")
    cut = stem.encode()[:room].decode("utf-8", "ignore")
    return f"{cut}{tag}{dot + ext if ext else ''}"


def safe_name(relative: str) -> str:
    """``relative`` with every part safe to create and to log (see the module doc)."""
    parts = [_escape_part(part) for part in relative.split("/")]
    fitted = [_fit(part, NAME_MAX) for part in parts[:-1]] + [_fit(parts[-1], MAX_NAME_BYTES)]
    return "/".join(fitted)
