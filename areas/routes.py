"""The upload areas' routes (areas/api.py, areas/direct.py, areas/parts.py)."""
from __future__ import annotations

from typing import Any

from areas import parts
from areas.api import AreaResource, FileResource, LockResource, StatusResource, UnlockResource
from areas.direct import AbortUpload, CompleteUpload, StartUpload
from areas.submit import SubmitResource, ValidateResource
from areas.web import AREA_ID


def routes(services: Any, prefixes: tuple[str, ...]) -> list[Any]:
    deps = {"services": services}
    table: list[Any] = []
    for prefix in prefixes:
        base = rf"{prefix}/areas/{AREA_ID}"
        upload = rf"{base}/files/(.+)/uploads/([0-9a-f]{{32}})"
        table += [
            (rf"{upload}/complete", CompleteUpload, deps),
            (upload, AbortUpload, deps),
            (rf"{base}/files/(.+)/uploads", StartUpload, deps),
            (rf"{base}/validate", ValidateResource, deps),
            (rf"{base}/submit", SubmitResource, deps),
            (rf"{base}/status", StatusResource, deps),
            (rf"{base}/lock", LockResource, deps),
            (rf"{base}/unlock", UnlockResource, deps),
            (rf"{base}/files/(.+)", FileResource, deps),
            (base, AreaResource, deps),
        ]
    return table + parts.routes(services)
