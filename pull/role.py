"""Wiring of the pull intake into a process: the start-up check of ``PULL_PROVIDERS``,
the jobs API routes (served by the gateway, and by ``python app.py puller`` alone with
``/metrics`` and ``/api/v1/health``), and the puller itself."""
from __future__ import annotations

from typing import Any

from tornado.httpserver import HTTPServer

from core.services import Services
from core.settings import Settings
from core.steps import Decryptor
from pull import api
from pull.config import Provider, ProviderError, load_providers
from pull.service import Puller

__all__ = ["ProviderError", "PullRole", "preflight"]


def preflight(settings: Settings) -> dict[str, Provider]:
    """The providers of ``PULL_PROVIDERS`` (none when unset), checked whole; raises
    ``ProviderError`` naming the entry that is wrong."""
    if settings.pull_providers is None:
        return {}
    providers = load_providers(settings.pull_providers, settings.valid_upload_types)
    for provider in providers.values():
        if "decrypt" in provider.steps:
            try:
                Decryptor(provider.gpg_home, provider.gpg_passphrase)
            except RuntimeError as exc:
                raise ProviderError(f"PULL_PROVIDERS: provider {provider.name!r}: {exc}") from None
    return providers


class PullRole:
    def __init__(self, services: Services, providers: dict[str, Provider]) -> None:
        self.services = services
        self.providers = providers
        self.puller: Puller | None = None
        self.server: HTTPServer | None = None

    def routes(self) -> list[Any]:
        return api.routes(self.services, self.providers, self.wake)

    def wake(self, provider: str) -> None:
        if self.puller is not None:
            self.puller.wake(provider)

    async def start(self, serve_status: bool) -> None:
        self.puller = Puller(self.services, self.providers)
        await self.puller.start()
        if serve_status:
            from upload import api as upload_api
            from upload.app import http_server, status_application

            deps = {"services": self.services}
            app = status_application(self.services, [
                (r"/metrics", upload_api.MetricsHandler, deps),
                (r"/api/v1/health", upload_api.HealthHandler, deps),
                *self.routes()])
            settings = self.services.settings
            self.server = http_server(app)
            self.server.listen(settings.listen_port, settings.listen_address)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.puller is not None:
            await self.puller.stop()
