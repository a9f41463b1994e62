"""What an announcement says about a payload's bytes (the contract's announcement
paragraph): ``size`` and ``checksums`` always describe the bytes served at its ``url``. A
payload stored compressed (a watcher rule's or a pull provider's ``gzip``) also carries
``compression`` and ``uncompressed`` (``{size, sha256, sha1}``: the content as it came
in, what the asset-transfer events and the bundles name).

The ``uploads`` row keeps the content's ``size`` and ``sha256`` (request ids and
duplicates are derived from them) and, for a compressed payload, ``stored_size``,
``stored_sha256`` and the content's ``sha1`` (migration 0010).
"""
from __future__ import annotations

from typing import Any


def describe_stored(size: int, sha256: str, compression: str, stored_size: int,
                    stored_sha256: str, sha1: str) -> dict[str, Any]:
    """The announcement fields of a payload stored compressed: they replace ``size`` and
    ``checksums`` of the content by the stored object's."""
    return {
        "size": stored_size,
        "checksums": {"sha256": stored_sha256},
        "compression": compression,
        "uncompressed": {"size": size, "sha256": sha256, "sha1": sha1},
    }


def describe_upload(upload: dict[str, Any]) -> dict[str, Any]:
    """``size``, ``checksums`` (and ``compression``, ``uncompressed``) of a recorded upload,
    for the messages that name its stored object (``available``)."""
    if upload.get("compression") and upload.get("stored_sha256"):
        return describe_stored(upload["size"], upload["sha256"], upload["compression"],
                               upload["stored_size"], upload["stored_sha256"],
                               upload["sha1"])
    described: dict[str, Any] = {"size": upload["size"],
                                 "checksums": {"sha256": upload["sha256"]}}
    if upload.get("compression"):  # recorded before 0010: no stored figures to give
        described["compression"] = upload["compression"]
    return described


def served_name(filename: str | None, compression: str | None) -> str | None:
    """The name a payload's stored bytes are downloaded as (``Content-Disposition``): its
    file name, with ``.gz`` when it is stored gzip-compressed."""
    if not filename or not filename.strip():
        return None
    return f"{filename}.gz" if compression == "gzip" else filename
