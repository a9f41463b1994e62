"""Resumable uploads over tus 1.0.0 (https://tus.io/protocols/resumable-upload): the
protocol and its HTTP endpoints, and the browser upload page. It knows nothing of S3 or
disks: bytes go to core.resumable, which feeds the same ingest path as multipart uploads.
"""
from __future__ import annotations

from typing import Any

from core.services import Services


def routes(services: Services, prefixes: tuple[str, ...]) -> list[Any]:
    """The tus endpoints under each API prefix, and the ``/upload/`` page. None when the
    storage driver cannot append (no ``ResumableStorage`` capability)."""
    if services.resumable is None:
        return []
    from tus import page
    from tus.handlers import CreationHandler, UploadHandler
    from tus.protocol import UPLOAD_ID

    deps = {"services": services}
    table: list[Any] = []
    for prefix in prefixes:
        table += [
            (rf"{prefix}/tus/?", CreationHandler, deps),
            (rf"{prefix}/tus/({UPLOAD_ID})/?", UploadHandler, deps),
        ]
    return table + page.routes(services)
