"""The jobs API (also under ``/api/ingress/v1/``):

- ``POST /api/v1/pulls/<provider>``: start a job now. 202 ``{"job_id", "provider",
  "state": "queued", "url"}``; 404 ``not_found`` for an unknown provider; 409
  ``job_running`` (with ``job_id``) when one is queued or running for it. Body optional:
  ``{"retry_failed": true}`` makes the files that failed before pending again.
- ``GET /api/v1/pulls/jobs/<id>``: state (``queued``, ``running``, ``completed``,
  ``failed``), ``reason``, counts of files (total, done, ingested, duplicate, failed,
  changed, pending, skipped, unchanged), bytes (total, done), ``percent``, start and end
  times, and ``items``: its files (failed ones first, at most 1000) with their state,
  bytes, request ids and errors.
- ``GET /api/v1/pulls/jobs[?provider=…&limit=…]``: recent jobs, newest first (50, at
  most 500).
- ``GET /api/v1/pulls/providers``: the configured providers, without secrets.

Every endpoint needs an API key with the scope ``pulls`` (auth/; 401 without, 403 without
the scope). The job is queued in the database; whichever puller holds the provider's lease runs it
(this process's at once, when it runs the puller).
"""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Callable

from auth import require_scope
from core.services import Services
from pull import store
from pull.config import Provider
from upload.base import ApiHandler
from upload.errors import ApiError

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


class PullHandler(ApiHandler):
    def initialize(self, services: Services, providers: dict[str, Provider],  # type: ignore[override]
                   wake: Callable[[str], None]) -> None:
        super().initialize(services)
        self.providers = providers
        self.wake = wake

    @require_scope("pulls")
    async def prepare(self) -> None:
        """Every jobs endpoint is an operator's: an API key with the scope ``pulls``."""

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        engine = self.services.database.engine
        return await loop.run_in_executor(self.services.executor, lambda: func(engine, *args))

    def provider(self, name: str) -> Provider:
        found = self.providers.get(name)
        if found is None:
            raise ApiError("not_found", f"no provider {name!r}")
        return found


class StartHandler(PullHandler):
    async def post(self, name: str) -> None:
        provider = self.provider(name)
        retry_failed = self._retry_failed()
        if retry_failed:
            await self.run(store.retry_failed, provider.name)
        try:
            job_id = await self.run(store.create_job, provider.name, "api")
        except store.JobRunning as exc:
            self.set_status(409)
            self.write_json({"error": "job_running", "job_id": exc.job_id,
                             "message": f"a job for {provider.name} is queued or running"})
            return
        self.wake(provider.name)
        self.set_status(202)
        self.write_json({"job_id": job_id, "provider": provider.name, "state": "queued",
                         "url": f"/api/v1/pulls/jobs/{job_id}"})

    def _retry_failed(self) -> bool:
        body = self.request.body.strip()
        if not body:
            return False
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ApiError("bad_request", "the body is not JSON") from None
        if not isinstance(data, dict) or set(data) - {"retry_failed"} or not isinstance(
                data.get("retry_failed", False), bool):
            raise ApiError("bad_request", 'the body may only be {"retry_failed": true|false}')
        return bool(data.get("retry_failed"))


class JobHandler(PullHandler):
    async def get(self, job_id: str) -> None:
        if not JOB_ID.match(job_id):
            raise ApiError("not_found", f"no job {job_id}")
        found = await self.run(lambda engine: store.job_documents(engine, job_id=job_id))
        if not found:
            raise ApiError("not_found", f"no job {job_id}")
        self.write_json(found[0])


class JobsHandler(PullHandler):
    async def get(self) -> None:
        provider = self.get_query_argument("provider", None)
        if provider is not None:
            provider = self.provider(provider).name
        raw = self.get_query_argument("limit", str(DEFAULT_LIMIT))
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError("bad_request", f"limit must be an integer from 1 to {MAX_LIMIT}")
        jobs = await self.run(lambda engine: store.job_documents(engine, provider, int(raw)))
        self.write_json({"jobs": jobs})


class ProvidersHandler(PullHandler):
    async def get(self) -> None:
        self.write_json({"providers": [p.public() for _, p in sorted(self.providers.items())]})


def routes(services: Services, providers: dict[str, Provider], wake: Callable[[str], None],
           prefixes: tuple[str, ...] = ("/api/v1", "/api/ingress/v1")) -> list[Any]:
    deps = {"services": services, "providers": providers, "wake": wake}
    table: list[Any] = []
    for prefix in prefixes:
        table += [
            (rf"{prefix}/pulls/providers", ProvidersHandler, deps),
            (rf"{prefix}/pulls/jobs", JobsHandler, deps),
            (rf"{prefix}/pulls/jobs/([^/]+)", JobHandler, deps),
            (rf"{prefix}/pulls/([a-z0-9_-]{{1,64}})", StartHandler, deps),
        ]
    return table
