"""The validators' own variables, read from the settings' environment and checked at
start-up (``preflight``; a bad value is a ``SettingsError`` naming it):

- ``VALIDATORS``: ``service:check[+check],...`` (default ``testareno:test,assets:obj``,
  entries for services not in ``VALID_UPLOAD_TYPES`` dropped from the default only);
- ``VALIDATOR_COMMAND_<SERVICE>`` (shlex-split), ``VALIDATOR_TIMEOUT_<SERVICE>`` (300 s);
- ``VALIDATOR_WORKERS`` (4), ``VALIDATOR_MAX_ATTEMPTS`` (3).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping

from core.settings import (
    Settings,
    SettingsError,
    env_float,
    env_int,
    env_list,
    env_suffix,
)
from validators.registry import CHECKS, DEFAULT_VALIDATORS


@dataclass(frozen=True)
class ValidatorConfig:
    checks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    workers: int = 4
    max_attempts: int = 3


def validator_config(settings: Settings) -> ValidatorConfig:
    """The validators' configuration of ``settings`` (its environment), checked."""
    return _parse(settings.env, settings.valid_upload_types)


def _parse(env: Mapping[str, str], services: tuple[str, ...]) -> ValidatorConfig:
    """VALIDATORS (service:check[+check],...), VALIDATOR_COMMAND_<SERVICE> (shlex-split),
    VALIDATOR_TIMEOUT_<SERVICE>, VALIDATOR_WORKERS, VALIDATOR_MAX_ATTEMPTS (validators/)."""
    def known(service: str, name: str) -> str:
        if service not in services:
            raise SettingsError(f"{name}: {service!r} is not in VALID_UPLOAD_TYPES")
        return service

    checks: dict[str, tuple[str, ...]] = {}
    for entry in env_list(env, "VALIDATORS", DEFAULT_VALIDATORS):
        service, _, names = entry.partition(":")
        parts = tuple(n.strip() for n in names.split("+") if n.strip())
        if not parts or any(n not in CHECKS for n in parts):
            raise SettingsError(f"VALIDATORS: {entry!r} must be service:check[+check] with "
                                f"checks among {', '.join(sorted(CHECKS))}")
        if env.get("VALIDATORS") or service.strip() in services:  # defaults only if served
            checks[known(service.strip(), "VALIDATORS")] = parts
    commands: dict[str, tuple[str, ...]] = {}
    timeouts: dict[str, float] = {}
    for service in services:
        suffix = env_suffix(service)
        raw = env.get(f"VALIDATOR_COMMAND_{suffix}")
        if raw:
            try:
                argv = tuple(shlex.split(raw))
            except ValueError as exc:
                raise SettingsError(f"VALIDATOR_COMMAND_{suffix}: {exc}") from None
            if not argv:
                raise SettingsError(f"VALIDATOR_COMMAND_{suffix} is empty")
            commands[service] = argv
        timeouts[service] = env_float(env, f"VALIDATOR_TIMEOUT_{suffix}", 300.0)
    prefix = "VALIDATOR_COMMAND_"
    for name in env:
        if name.startswith(prefix) and env[name] and not any(
                name == prefix + env_suffix(s) for s in services):
            raise SettingsError(f"{name}: no such service in VALID_UPLOAD_TYPES")
    return ValidatorConfig(checks, commands, timeouts,
                           env_int(env, "VALIDATOR_WORKERS", 4, minimum=1),
                           env_int(env, "VALIDATOR_MAX_ATTEMPTS", 3, minimum=1))
