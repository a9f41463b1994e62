"""The browser upload page at ``/upload/``: static files (the page, its script, and Uppy's
prebuilt bundle vendored in ``static/vendor/`` with its MIT licence; the version is
pinned in ``static/package.json`` and ``static/package-lock.json``) and the little
configuration the script reads (``/upload/config.json``: services, size limit, endpoint).

To update Uppy: change the version in ``static/package.json``, run
``npm install --package-lock-only`` there, then copy ``dist/uppy.min.mjs``,
``dist/uppy.min.css`` and ``LICENSE`` (as ``LICENSE-uppy``) from the package's tarball
(``npm pack uppy@VERSION``) into ``static/vendor/``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tornado.web

from core.services import Services

STATIC = Path(__file__).resolve().parent / "static"
CHUNK_SIZE = 5 * 1024 * 1024  # PATCH size: a lost connection costs at most this much again
SERVED = ("index.html", "upload.js", "vendor/uppy.min.mjs", "vendor/uppy.min.css",
          "vendor/LICENSE-uppy")


class ConfigHandler(tornado.web.RequestHandler):
    def initialize(self, services: Services) -> None:
        self.services = services

    def get(self) -> None:
        settings = self.services.settings
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({
            "services": list(settings.valid_upload_types),
            "maxSize": settings.max_length,
            "endpoint": "/api/v1/tus/",
            "statusPrefix": "/api/v1/uploads/",
            "chunkSize": CHUNK_SIZE,
        }))


class PageFiles(tornado.web.StaticFileHandler):
    """Only the page's own files; everything else under /upload/ is 404."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        checked = super().validate_absolute_path(root, absolute_path)
        if checked is not None:
            relative = Path(checked).relative_to(Path(root).resolve()).as_posix()
            if relative not in SERVED:
                raise tornado.web.HTTPError(404)
        return checked

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        code = {403: "forbidden", 404: "not_found"}.get(status_code, "bad_request")
        self.finish(json.dumps({"error": code, "message": "no such file"}))

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        if path.endswith(".mjs") or path.endswith(".js"):
            self.set_header("Content-Type", "text/javascript; charset=utf-8")


def routes(services: Services) -> list[Any]:
    return [
        (r"/upload", tornado.web.RedirectHandler, {"url": "/upload/"}),
        (r"/upload/config\.json", ConfigHandler, {"services": services}),
        (r"/upload/(.*)", PageFiles, {"path": str(STATIC), "default_filename": "index.html"}),
    ]
