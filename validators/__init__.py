"""Validators: consumers of ``platform.upload.<service>`` that answer on
``platform.upload.validation``. ``loop.py`` holds the loop every validator shares; each other
module is one check.

Which services get which checks (parsed and checked by ``validators.config``):
- ``VALIDATORS``: ``service:check[+check…],…``, default ``testareno:test,assets:obj``
  (entries for services not in ``VALID_UPLOAD_TYPES`` are dropped from the default only).
  Built-in checks: ``test`` (answers ``TEST_VALIDATOR_VERDICT``), ``archive``
  (validators/archive.py), ``mime`` (validators/mimecheck.py), ``obj`` (validators/objcheck.py).
- ``VALIDATOR_COMMAND_<SERVICE>``: a command validator (validators/command.py), run after
  that service's built-in checks, if any.
One loop (consumer group ``validator-<service>``) per service runs its checks in order; the
first verdict that is not ``success`` is the answer.

``python app.py validator NAME``: NAME is a service (its loop), a check name (the loops of
every service using it) or ``all`` (every configured service's loop, as ``python app.py``
runs them).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from validators.config import validator_config

if TYPE_CHECKING:
    from bus import Bus
    from core.settings import Settings
    from validators.loop import Check, ValidatorLoop

from validators.registry import CHECKS, DEFAULT_VALIDATORS

__all__ = ["CHECKS", "DEFAULT_VALIDATORS", "UnknownValidator", "build_loops", "check_for",
           "preflight", "services_for", "without_validator"]


class UnknownValidator(ValueError):
    """``validator NAME`` names no configured service or check."""


def _factory(name: str) -> Any:
    module, attribute = CHECKS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def services_for(settings: Settings, name: str) -> list[str]:
    """The services whose loop role ``validator NAME`` runs."""
    config = validator_config(settings)
    configured = sorted(set(config.checks) | set(config.commands))
    if name == "all":
        return configured
    if name in configured:
        return [name]
    users = [s for s in configured if name in config.checks.get(s, ())]
    if not users:
        known = ", ".join(["all", *configured, *sorted(CHECKS)])
        raise UnknownValidator(f"no validator {name!r} is configured; known: {known}")
    return users


def without_validator(settings: Settings) -> list[str]:
    """The services of ``VALID_UPLOAD_TYPES`` that no validator of this deployment's
    configuration serves: their uploads wait for one outside (on their topic, or through
    the callback URL) and are rejected after ``VALIDATION_TIMEOUT`` otherwise."""
    served = set(services_for(settings, "all"))
    return [s for s in settings.valid_upload_types if s not in served]


def check_for(settings: Settings, service: str) -> Check:
    from validators.command import CommandCheck
    from validators.loop import chain

    config = validator_config(settings)
    checks = [_factory(name)(settings) for name in config.checks.get(service, ())]
    argv = config.commands.get(service)
    if argv:
        command = CommandCheck(tuple(argv), config.timeouts.get(service, 300.0))
        command.verify()
        checks.append(command)
    return chain(checks)


def build_loops(settings: Settings, bus: Bus, name: str) -> list[ValidatorLoop]:
    """One loop per service that ``validator NAME`` runs (raises ``UnknownValidator``, or
    ``FileNotFoundError`` for a command that is not installed)."""
    from validators.loop import ValidatorLoop

    config = validator_config(settings)
    return [
        ValidatorLoop(bus, service, check_for(settings, service),
                      workers=config.workers,
                      max_attempts=config.max_attempts,
                      validation_timeout=settings.validation_timeout)
        for service in services_for(settings, name)
    ]


def preflight(settings: Settings, name: str) -> None:
    """Fail before start-up for a bad variable (``SettingsError``), an unknown NAME or a
    command that is not installed."""
    for service in services_for(settings, name):
        check_for(settings, service)
