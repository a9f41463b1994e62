"""Optional storage capabilities that upload areas need (areas/), each a small interface
checked once at start-up, like ``ResumableStorage``:

- ``DirectUploads``: multipart objects whose parts a client sends straight to storage,
  each through a URL of its own (S3: a presigned ``UploadPart`` URL; localdisk: a signed
  URL of the gateway, which writes the part through ``GatewayParts``), then completed
  with the parts' ETags. Parts follow S3's rules on every driver: numbers 1 to 10,000 in
  ascending order, every part but the last at least 5 MiB, an ETag per part that is the
  quoted MD5 of its bytes. While incomplete, nothing is visible under the key.
- ``GatewayParts``: the driver's part URLs point at the gateway (localdisk), which
  streams each part body into ``open_direct_part``.
- ``PrefixListing``: the committed objects under a key prefix (an area's leftovers).
- ``ObjectTags``: key/value tags on a stored object (S3 object tagging).

Keys under ``AREAS_PREFIX`` belong to their area: the general clean-up (core/cleanup.py,
``cleanup_incomplete``) leaves them, their unfinished direct uploads included, to the
area's own reaper.
"""
from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage import ObjectWriter

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')


class PartsRefused(ValueError):
    """A completion the storage refuses: a part missing, an ETag that is not the stored
    part's, a part out of order or too small. The upload stays open (send the part again)."""


@dataclass(frozen=True)
class StoredPart:
    number: int
    etag: str  # quoted, as S3 gives it
    size: int


def plain_etag(etag: str) -> str | None:
    """``"<md5 hex>"`` or ``<md5 hex>`` → the hex; None for anything else."""
    found = ETAG.match(etag.strip().lower()) if isinstance(etag, str) else None
    return found.group(1) if found else None


def part_size_for(size: int, minimum: int) -> int:
    """The part size of a direct upload of ``size`` bytes: ``minimum`` (at least S3's
    5 MiB), or more, in whole MiB, when ``size`` would need over 10,000 parts."""
    needed = math.ceil(size / MAX_PARTS / MIB) * MIB
    return min(MAX_PART_SIZE, max(minimum, MIN_PART_SIZE, needed))


def part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size)) if size else 0


def check_part_order(parts: Sequence[tuple[int, str]]) -> None:
    """S3's rules for a completion's list of ``(number, etag)``; ``PartsRefused``."""
    if not parts:
        raise PartsRefused("no parts to complete")
    previous = 0
    for number, etag in parts:
        if not 1 <= number <= MAX_PARTS or number <= previous:
            raise PartsRefused("part numbers must be 1 to 10000, in ascending order")
        if plain_etag(etag) is None:
            raise PartsRefused(f"part {number}: {etag!r} is not an ETag")
        previous = number


class DirectUploads(ABC):
    @abstractmethod
    def start_direct(self, bucket: str, key: str) -> dict[str, Any]:
        """Open a direct upload of object ``key``; returns its state (JSON-able), which
        every later call gets back."""

    @abstractmethod
    def direct_part_url(self, bucket: str, key: str, state: dict[str, Any], number: int,
                        max_size: int, expires_in: int) -> str:
        """The URL a client PUTs part ``number`` to (at most ``max_size`` bytes; the
        answer's ``ETag`` header names the part)."""

    @abstractmethod
    def direct_parts(self, bucket: str, key: str, state: dict[str, Any]) -> list[StoredPart]:
        """The parts stored so far, by number; ``FileNotFoundError`` when the upload is
        not open (completed, aborted, never started)."""

    @abstractmethod
    def complete_direct(self, bucket: str, key: str, state: dict[str, Any],
                        parts: Sequence[tuple[int, str]]) -> None:
        """Make the object of ``parts`` (``(number, etag)``, ascending) visible under
        ``key``. ``PartsRefused`` for a wrong list; idempotent: an upload completed
        already whose object is there returns quietly; ``FileNotFoundError`` otherwise."""

    @abstractmethod
    def abort_direct(self, bucket: str, key: str, state: dict[str, Any]) -> None:
        """Throw away the upload's parts; an upload that is not open is fine."""

    @abstractmethod
    def list_direct(self, bucket: str, prefix: str) -> Iterator[tuple[str, dict[str, Any], float]]:
        """``(key, state, started at, epoch seconds)`` of every open direct upload whose
        key starts with ``prefix``: their owner aborts those it does not know."""


class PartWriter(ObjectWriter):
    """One part of a direct upload; ``etag`` (quoted MD5) once committed."""

    etag: str = ""


class GatewayParts(ABC):
    @abstractmethod
    def open_direct_part(self, bucket: str, upload_id: str, number: int) -> PartWriter:
        """Write part ``number`` of the open upload ``upload_id`` (the id its part URL
        names); ``FileNotFoundError`` when that upload is not open. A part sent again
        replaces the earlier one at ``commit``."""


class PrefixListing(ABC):
    @abstractmethod
    def list_prefix(self, bucket: str, prefix: str) -> Iterator[str]:
        """Keys of the committed objects whose key starts with ``prefix``."""


class ObjectTags(ABC):
    @abstractmethod
    def tag_object(self, bucket: str, key: str, tags: Mapping[str, str]) -> None:
        """Set the object's tags (replacing any); ``FileNotFoundError`` when missing."""


def direct_uploads(storage: object) -> DirectUploads | None:
    return storage if isinstance(storage, DirectUploads) else None


def gateway_parts(storage: object) -> GatewayParts | None:
    return storage if isinstance(storage, GatewayParts) else None


def prefix_listing(storage: object) -> PrefixListing | None:
    return storage if isinstance(storage, PrefixListing) else None


def object_tags(storage: object) -> ObjectTags | None:
    return storage if isinstance(storage, ObjectTags) else None
