"""Providers: the SFTP servers the puller fetches from, read from the file named by
``PULL_PROVIDERS`` (YAML, or TOML when the name ends in ``.toml``) and checked whole at
start-up: a bad entry stops start-up with a message naming it (``ProviderError``).

The file holds one table, ``providers``, of entries keyed by name (``[a-z0-9_-]{1,64}``,
the name in ``/api/v1/pulls/<name>``)::

    providers:
      acme:
        host: sftp.acme.example          # required
        port: 22
        user: gateway                    # required
        password_file: /run/secrets/acme # or password_env, or password; or private_key
        private_key: /etc/gateway/acme_ed25519
        private_key_passphrase_env: ACME_KEY_PASSPHRASE
        known_hosts: /etc/gateway/known_hosts   # or host_key: "ssh-ed25519 AAAA..."
        accept_unknown_host_key: false   # true: trust whatever key the server shows
        directory: /outgoing             # default: the login directory
        pattern: "*.csv.gz.gpg"          # or a list; case-insensitive, * crosses /
        recursive: false
        steps: [decrypt, gunzip]         # of decrypt, untar, gunzip (core.steps)
        gpg_home: /etc/gateway/gnupg-acme    # keyring with the secret key (decrypt)
        gpg_passphrase_file: /run/secrets/acme-gpg   # or _env, or gpg_passphrase
        service: testareno               # in VALID_UPLOAD_TYPES
        category: acme
        compress: false                  # store payloads gzip-compressed
        schedule: 15m                    # run every 15 minutes; unset: only on demand
        completion: leave                # leave, move (to move_to) or delete
        move_to: /outgoing/done
        concurrency: 32                  # files in flight at once (each an open handle there)
        large_concurrency: 4             # of which over 1 MiB (each has 8 MiB of reads in flight)
        retries: 5                       # connection attempts before the job fails
        retry_delay: 1s                  # first backoff delay, doubling up to 60 s
        timeout: 30s                     # connect and per-request timeout

Secrets (``password``, ``private_key_passphrase``, ``gpg_passphrase``) come inline, from a
file (``<name>_file``, trailing newline stripped) or from a variable (``<name>_env``); at
most one of the three. They live in fields that never print (``repr=False``) and never
leave this module except to asyncssh and gpg; ``Provider.public()`` is what the API shows.
Durations are seconds or a number with ``s``, ``m``, ``h`` or ``d``.
"""
from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.steps import STEPS

NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
RESERVED = ("jobs", "providers")  # path segments of the jobs API
CATEGORY = re.compile(r"^[A-Za-z0-9._+-]{1,128}$")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
COMPLETIONS = ("leave", "move", "delete")
SECRETS = ("password", "private_key_passphrase", "gpg_passphrase")
KEYS = frozenset({
    "host", "port", "user", "private_key", "known_hosts", "host_key",
    "accept_unknown_host_key", "directory", "pattern", "recursive", "steps", "gpg_home",
    "service", "category", "compress", "schedule", "completion", "move_to", "concurrency",
    "large_concurrency", "retries", "retry_delay", "timeout",
    *(f"{secret}{suffix}" for secret in SECRETS for suffix in ("", "_file", "_env")),
})


class ProviderError(ValueError):
    """The providers file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Provider:
    name: str
    host: str
    user: str
    service: str
    category: str
    port: int = 22
    password: str | None = field(default=None, repr=False)
    private_key: Path | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    host_key: str | None = None
    accept_unknown_host_key: bool = False
    directory: str = "."
    patterns: tuple[str, ...] = ("*",)
    recursive: bool = False
    steps: frozenset[str] = frozenset()
    gpg_home: Path | None = None
    gpg_passphrase: str | None = field(default=None, repr=False)
    compress: bool = False
    schedule: float | None = None
    completion: str = "leave"
    move_to: str | None = None
    concurrency: int = 32
    large_concurrency: int = 4
    retries: int = 5
    retry_delay: float = 1.0
    timeout: float = 30.0

    @property
    def content_type(self) -> str:
        return f"application/vnd.redhat.{self.service}.{self.category}"

    def matches(self, relative: str) -> bool:
        lowered = relative.lower()
        return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.patterns)

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but secrets (and where they are kept)."""
        return {
            "name": self.name, "host": self.host, "port": self.port, "user": self.user,
            "auth": "private_key" if self.private_key else "password",
            "directory": self.directory, "patterns": list(self.patterns),
            "recursive": self.recursive, "steps": sorted(self.steps),
            "service": self.service, "category": self.category, "compress": self.compress,
            "schedule_seconds": self.schedule, "completion": self.completion,
            "move_to": self.move_to, "concurrency": self.concurrency,
            "large_concurrency": self.large_concurrency,
        }


def load_providers(path: Path, services: Iterable[str],
                   env: Mapping[str, str] | None = None) -> dict[str, Provider]:
    """Read and check the providers file; raises ``ProviderError`` naming what is wrong."""
    env = os.environ if env is None else env
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProviderError(f"PULL_PROVIDERS: cannot read {path}: {exc.strerror}") from None
    data = _parse(path, raw)
    table = data.get("providers") if isinstance(data, dict) else None
    if not isinstance(table, dict) or not table:
        raise ProviderError(f"PULL_PROVIDERS ({path}): expected a table 'providers' of "
                            "entries keyed by provider name")
    providers = {}
    for name, entry in table.items():
        try:
            providers[name] = _provider(name, entry, frozenset(services), env)
        except ProviderError as exc:
            raise ProviderError(f"PULL_PROVIDERS ({path}): provider {name!r}: {exc}") from None
    return providers


def _parse(path: Path, raw: bytes) -> Any:
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(raw.decode())
        import yaml

        return yaml.safe_load(raw)
    except Exception as exc:  # noqa: BLE001 - any parse error is the file's fault
        kind = "TOML" if path.suffix.lower() == ".toml" else "YAML"
        raise ProviderError(f"PULL_PROVIDERS ({path}) is not valid {kind}: {exc}") from None


def _provider(name: Any, entry: Any, services: frozenset[str],
              env: Mapping[str, str]) -> Provider:
    if not isinstance(name, str) or not NAME.match(name) or name in RESERVED:
        raise ProviderError("a provider name is 1 to 64 of a-z, 0-9, _ and -, and not "
                            f"{' or '.join(RESERVED)}")
    if not isinstance(entry, dict):
        raise ProviderError("expected a table of settings")
    unknown = sorted(set(map(str, entry)) - KEYS)
    if unknown:
        raise ProviderError(f"unknown setting {unknown[0]!r}")
    get = _Reader(entry)
    service = get.text("service", required=True)
    if service not in services:
        raise ProviderError(f"service {service!r} is not in VALID_UPLOAD_TYPES "
                            f"({', '.join(sorted(services))})")
    category = get.text("category", required=True)
    if not CATEGORY.match(category):
        raise ProviderError(f"category {category!r} must be [A-Za-z0-9._+-]{{1,128}}")
    secrets = {secret: _secret(entry, secret, env) for secret in SECRETS}
    provider = Provider(
        name=name, host=get.text("host", required=True), user=get.text("user", required=True),
        service=service, category=category, port=get.integer("port", 22, 1, 65535),
        password=secrets["password"], private_key=get.file("private_key"),
        private_key_passphrase=secrets["private_key_passphrase"],
        known_hosts=get.file("known_hosts"), host_key=get.text("host_key") or None,
        accept_unknown_host_key=get.flag("accept_unknown_host_key"),
        directory=get.text("directory") or ".", patterns=get.patterns(),
        recursive=get.flag("recursive"), steps=get.steps(),
        gpg_home=get.file("gpg_home", directory=True), gpg_passphrase=secrets["gpg_passphrase"],
        compress=get.flag("compress"), schedule=get.duration("schedule", None),
        completion=get.choice("completion", COMPLETIONS, "leave"),
        move_to=get.text("move_to") or None, concurrency=get.integer("concurrency", 32, 1, 64),
        large_concurrency=get.integer("large_concurrency", 4, 1, 64),
        retries=get.integer("retries", 5, 1, 100),
        retry_delay=get.duration("retry_delay", 1.0) or 1.0,
        timeout=get.duration("timeout", 30.0) or 30.0,
    )
    _check_access(provider)
    return provider


def _check_access(provider: Provider) -> None:
    """Credentials, host keys, keyring and completion: what can be checked before any
    connection is made, so that a job does not fail for a typo hours later."""
    import asyncssh

    if (provider.password is None) == (provider.private_key is None):
        raise ProviderError("give exactly one of password (_file, _env) and private_key")
    if provider.private_key is not None:
        try:
            asyncssh.read_private_key(provider.private_key, provider.private_key_passphrase)
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError) as exc:
            raise ProviderError(f"private_key {provider.private_key} cannot be used: "
                                f"{type(exc).__name__}") from None
    if provider.host_key is not None:
        try:
            asyncssh.import_public_key(provider.host_key)
        except (asyncssh.KeyImportError, ValueError):
            raise ProviderError("host_key is not an OpenSSH public key") from None
    if provider.known_hosts is not None:
        try:
            asyncssh.read_known_hosts(str(provider.known_hosts))
        except (ValueError, OSError) as exc:
            raise ProviderError(f"known_hosts {provider.known_hosts} cannot be read: {exc}") from None
    if provider.host_key and provider.known_hosts:
        raise ProviderError("give known_hosts or host_key, not both")
    if not (provider.host_key or provider.known_hosts or provider.accept_unknown_host_key):
        raise ProviderError("unknown host keys are refused: give known_hosts or host_key "
                            "(or accept_unknown_host_key: true)")
    if "decrypt" in provider.steps and provider.gpg_home is None:
        raise ProviderError("steps has decrypt: give gpg_home (the keyring)")
    if provider.completion == "move" and not provider.move_to:
        raise ProviderError("completion move needs move_to")
    if provider.move_to and provider.completion != "move":
        raise ProviderError("move_to is set but completion is not move")


def _secret(entry: dict[str, Any], name: str, env: Mapping[str, str]) -> str | None:
    given = [suffix for suffix in ("", "_file", "_env") if entry.get(name + suffix) is not None]
    if len(given) > 1:
        raise ProviderError(f"give at most one of {name}, {name}_file and {name}_env")
    if not given:
        return None
    key = name + given[0]
    value = entry[key]
    if not isinstance(value, str) or not value:
        raise ProviderError(f"{key} must be a non-empty string")
    if given[0] == "_env":
        if not env.get(value):
            raise ProviderError(f"{key}: the variable {value} is not set")
        return env[value]
    if given[0] == "_file":
        try:
            text = Path(value).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProviderError(f"{key}: cannot read {value}: {exc}") from None
        if not text:
            raise ProviderError(f"{key}: {value} is empty")
        return text
    return value


class _Reader:
    """Typed, checked reads of one entry's settings; errors name the setting."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry

    def text(self, key: str, required: bool = False) -> str:
        value = self.entry.get(key)
        if value is None:
            if required:
                raise ProviderError(f"{key} is required")
            return ""
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            raise ProviderError(f"{key} must be a non-empty string")
        return value.strip()

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProviderError(f"{key} must be an integer from {low} to {high}")
        return value

    def flag(self, key: str) -> bool:
        value = self.entry.get(key, False)
        if not isinstance(value, bool):
            raise ProviderError(f"{key} must be true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.entry.get(key, default)
        if value not in choices:
            raise ProviderError(f"{key} must be one of {', '.join(choices)}")
        return str(value)

    def duration(self, key: str, default: float | None) -> float | None:
        value = self.entry.get(key)
        if value is None:
            return default
        found = DURATION.match(str(value)) if not isinstance(value, bool) else None
        seconds = float(found[1]) * UNITS[found[2]] if found else 0.0
        if seconds <= 0:
            raise ProviderError(f"{key} must be a positive duration (seconds, or 30s, 15m, "
                                "1h, 1d)")
        return seconds

    def file(self, key: str, directory: bool = False) -> Path | None:
        raw = self.text(key)
        if not raw:
            return None
        path = Path(raw).expanduser()
        if not (path.is_dir() if directory else path.is_file()):
            raise ProviderError(f"{key}: {raw} is not {'a directory' if directory else 'a file'}")
        return path.resolve()

    def patterns(self) -> tuple[str, ...]:
        value = self.entry.get("pattern", "*")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(
                isinstance(v, str) and v.strip() for v in values):
            raise ProviderError("pattern must be a glob or a list of globs")
        return tuple(v.strip() for v in values)

    def steps(self) -> frozenset[str]:
        value = self.entry.get("steps", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProviderError(f"steps must be a list of {', '.join(STEPS)}")
        unknown = sorted(set(value) - set(STEPS))
        if unknown:
            raise ProviderError(f"unknown step {unknown[0]!r}; use {', '.join(STEPS)}")
        return frozenset(value)
