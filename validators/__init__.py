"""Validators: consumers of ``platform.upload.<service>`` that answer on
``platform.upload.validation``. ``loop.py`` holds the loop every validator shares; each other
module is one check.

Which services get which checks (parsed and checked by ``core.settings``):
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

if TYPE_CHECKING:  # the registry stays import-light: core.settings reads CHECKS
    from bus import Bus
    from core.settings import Settings
    from validators.loop import Check, ValidatorLoop

# check name -> "module:factory"; factories take the settings and return a Check
CHECKS = {
    "test": "validators.testareno:from_settings",
    "archive": "validators.archive:from_settings",
    "mime": "validators.mimecheck:from_settings",
    "obj": "validators.objcheck:from_settings",
}
DEFAULT_VALIDATORS = "testareno:test,assets:obj"


class UnknownValidator(ValueError):
    """``validator NAME`` names no configured service or check."""


def _factory(name: str) -> Any:
    module, attribute = CHECKS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def services_for(settings: "Settings", name: str) -> list[str]:
    """The services whose loop role ``validator NAME`` runs."""
    configured = sorted(set(settings.validators) | set(settings.validator_commands))
    if name == "all":
        return configured
    if name in configured:
        return [name]
    users = [s for s in configured if name in settings.validators.get(s, ())]
    if not users:
        known = ", ".join(["all", *configured, *sorted(CHECKS)])
        raise UnknownValidator(f"no validator {name!r} is configured; known: {known}")
    return users


def without_validator(settings: "Settings") -> list[str]:
    """The services of ``VALID_UPLOAD_TYPES`` that no validator of this deployment's
    configuration serves: their uploads wait for one outside (on their topic, or through
    the callback URL) and are rejected after ``VALIDATION_TIMEOUT`` otherwise."""
    served = set(services_for(settings, "all"))
    return [s for s in settings.valid_upload_types if s not in served]


def check_for(settings: "Settings", service: str) -> "Check":
    from validators.command import CommandCheck
    from validators.loop import chain

    checks = [_factory(name)(settings) for name in settings.validators.get(service, ())]
    argv = settings.validator_commands.get(service)
    if argv:
        command = CommandCheck(tuple(argv), settings.validator_timeouts.get(service, 300.0))
        command.verify()
        checks.append(command)
    return chain(checks)


def build_loops(settings: "Settings", bus: "Bus", name: str) -> list["ValidatorLoop"]:
    """One loop per service that ``validator NAME`` runs (raises ``UnknownValidator``, or
    ``FileNotFoundError`` for a command that is not installed)."""
    from validators.loop import ValidatorLoop

    return [
        ValidatorLoop(bus, service, check_for(settings, service),
                      workers=settings.validator_workers,
                      max_attempts=settings.validator_max_attempts,
                      validation_timeout=settings.validation_timeout)
        for service in services_for(settings, name)
    ]


def preflight(settings: "Settings", name: str) -> None:
    """Fail before start-up for an unknown NAME or a command that is not installed."""
    for service in services_for(settings, name):
        check_for(settings, service)
