"""Settings: one frozen object built once from the environment.

Every value is cast and checked here; a bad value fails at start-up naming the variable
(see the contract's configuration table for the public ones).
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


class SettingsError(ValueError):
    """A configuration variable has a value we cannot use."""


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be > 0, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def env_list(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    raw = env.get(name) or default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


DEFAULT_ASSET_NAME_PATTERN = r"(?P<case_number>[A-Za-z0-9][A-Za-z0-9-]*)_Step(?P<step>[0-9]+)\.obj"


def _name_pattern(env: Mapping[str, str], name: str, default: str) -> str:
    """A regular expression with the named groups ``case_number`` and ``step``."""
    raw = env.get(name) or default
    try:
        groups = re.compile(raw).groupindex
    except re.error as exc:
        raise SettingsError(f"{name} is not a regular expression: {exc}") from None
    if not {"case_number", "step"} <= set(groups):
        raise SettingsError(f"{name} must have the named groups case_number and step, got {raw!r}")
    return raw


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """``*`` or comma-separated origins (``scheme://host[:port]``) allowed by CORS."""
    origins = env_list(env, name, "")
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
            raise SettingsError(f"{name}: {origin!r} is not * or scheme://host[:port]")
    return origins


def _port(env: Mapping[str, str]) -> int:
    port = env_int(env, "LISTEN_PORT", 8888, minimum=0)
    if port > 65535:
        raise SettingsError(f"LISTEN_PORT must be a port number (0-65535), got {port}")
    return port


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name) or None
    if raw is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s]*)?", raw):
        raise SettingsError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw


def _database_url(env: Mapping[str, str], workdir: Path) -> str:
    """SQLite (a file) or PostgreSQL; anything else is refused before a driver is loaded.
    The value itself is not repeated: it may hold a password."""
    raw = env.get("DATABASE_URL") or f"sqlite:///{workdir / 'gateway.sqlite'}"
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in ("sqlite", "postgresql", "postgres", "postgresql+psycopg"):
        shown = f"scheme {scheme!r}" if scheme else "no scheme://"
        raise SettingsError(f"DATABASE_URL must be sqlite:///PATH or postgresql://..., got "
                            f"{shown}")
    return raw


def _kafka(env: Mapping[str, str]) -> str | None:
    raw = env.get("KAFKAMQ") or None
    if raw is not None:
        for server in raw.split(","):
            if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}",
                                server.strip()):
                raise SettingsError(f"KAFKAMQ must be host:port[,host:port...], got {raw!r}")
    return raw


def _services(env: Mapping[str, str]) -> tuple[str, ...]:
    services = env_list(env, "VALID_UPLOAD_TYPES", "advisor,testareno,assets")
    if not services:
        raise SettingsError("VALID_UPLOAD_TYPES names no service")
    for service in services:
        if not re.fullmatch(r"[a-z0-9_-]{1,64}", service):
            raise SettingsError(f"VALID_UPLOAD_TYPES: {service!r} is not a service name "
                                "(lower-case letters, digits, _ and -)")
    return services


def _workdir(env: Mapping[str, str]) -> Path:
    workdir = Path(env.get("WORKDIR") or "./data").resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"WORKDIR {str(workdir)!r}: {exc.strerror or exc}") from None
    if not os.access(workdir, os.R_OK | os.W_OK | os.X_OK):
        raise SettingsError(f"WORKDIR {str(workdir)!r} is not writable by this user")
    return workdir


def env_suffix(service: str) -> str:
    """``advisor`` → ``ADVISOR``: the suffix of that service's variables."""
    return service.upper().replace("-", "_")


def _signing_key(env: Mapping[str, str], workdir: Path) -> bytes:
    """URL_SIGNING_KEY, or a random key kept under WORKDIR so that every process of
    one machine (gateway, validators) agrees on it."""
    raw = env.get("URL_SIGNING_KEY")
    if raw:
        return raw.encode()
    path = workdir / "url-signing.key"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_bytes().strip()


@dataclass(frozen=True)
class Settings:
    listen_port: int = 8888
    listen_address: str = ""
    public_url: str = "http://127.0.0.1:8888"
    workdir: Path = Path("./data")
    storage_driver: str = "localdisk"
    s3_quarantine: str = "upload-quarantine"
    s3_perm: str = "upload-perm"
    s3_reject: str = "upload-reject"
    s3_endpoint_url: str | None = None
    kafka_servers: str | None = None
    database_url: str = ""
    max_length: int = 104857600
    valid_upload_types: tuple[str, ...] = ("advisor", "testareno", "assets")
    validation_timeout: int = 3600
    watch_dir: Path | None = None
    watch_rules: str | None = None  # checked by watcher.config (None: its default rules)
    watch_quiet_seconds: float = 2.0
    watch_concurrency: int = 8
    watch_max_ratio: float = 200.0
    watch_max_members: int = 10000
    pull_providers: Path | None = None
    gpg_home: Path | None = None
    gpg_passphrase: str | None = field(default=None, repr=False)
    identity_required: bool = False
    url_expiry: int = 86400
    url_signing_key: bytes = field(default=b"", repr=False)
    test_validator_verdict: str = "success"
    upload_threads: int = 16
    bus_retention_hours: float = 168.0
    asset_name_pattern: str = DEFAULT_ASSET_NAME_PATTERN
    http_idle_timeout: float = 60.0
    http_body_timeout: float = 600.0
    shutdown_grace: float = 30.0
    # seconds from a payload's first byte to its database record; longer fails the upload
    # (503), so that clean-up may remove what is older as abandoned (core/cleanup.py)
    ingest_deadline: float = 900.0
    tus_expiry: int = 86400
    tus_lease_seconds: int = 30
    tus_cors_origins: tuple[str, ...] = ()
    # the environment it was read from: packages read and check their own variables from
    # it at start-up (validators/config.py, watcher/config.py), so that this module
    # imports nothing of the packages that use it
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def buckets(self) -> dict[str, str]:
        """Logical bucket name → configured bucket (or directory) name."""
        return {"quarantine": self.s3_quarantine, "perm": self.s3_perm, "reject": self.s3_reject}

    @property
    def bus_path(self) -> Path:
        return self.workdir / "bus.sqlite"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        workdir = _workdir(env)
        port = _port(env)
        services = _services(env)
        driver = env.get("STORAGE_DRIVER") or "localdisk"
        if driver not in ("localdisk", "s3"):
            raise SettingsError(f"STORAGE_DRIVER must be localdisk or s3, got {driver!r}")
        verdict = env.get("TEST_VALIDATOR_VERDICT") or "success"
        if verdict not in ("success", "failure", "handoff"):
            raise SettingsError(
                f"TEST_VALIDATOR_VERDICT must be success, failure or handoff, got {verdict!r}"
            )
        watch_dir = env.get("WATCH_DIR")
        return cls(
            listen_port=port,
            listen_address=env.get("LISTEN_ADDRESS", ""),
            public_url=(_http_url(env, "PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            workdir=workdir,
            storage_driver=driver,
            s3_quarantine=env.get("S3_QUARANTINE") or "upload-quarantine",
            s3_perm=env.get("S3_PERM") or "upload-perm",
            s3_reject=env.get("S3_REJECT") or "upload-reject",
            s3_endpoint_url=_http_url(env, "S3_ENDPOINT_URL"),
            kafka_servers=_kafka(env),
            database_url=_database_url(env, workdir),
            max_length=env_int(env, "MAX_LENGTH", 104857600, minimum=1),
            valid_upload_types=services,
            validation_timeout=env_int(env, "VALIDATION_TIMEOUT", 3600, minimum=1),
            watch_dir=Path(watch_dir).resolve() if watch_dir else None,
            watch_rules=env.get("WATCH_RULES") or None,
            watch_quiet_seconds=env_float(env, "WATCH_QUIET_SECONDS", 2.0),
            watch_concurrency=env_int(env, "WATCH_CONCURRENCY", 8, minimum=1),
            watch_max_ratio=env_float(env, "WATCH_MAX_RATIO", 200.0),
            watch_max_members=env_int(env, "WATCH_MAX_MEMBERS", 10000, minimum=1),
            pull_providers=Path(env["PULL_PROVIDERS"]).resolve() if env.get("PULL_PROVIDERS")
            else None,
            gpg_home=Path(env["GPG_HOME"]).resolve() if env.get("GPG_HOME") else None,
            gpg_passphrase=env.get("GPG_PASSPHRASE") or None,
            identity_required=_bool(env, "IDENTITY_REQUIRED", False),
            url_expiry=env_int(env, "URL_EXPIRY", 86400, minimum=1),
            url_signing_key=_signing_key(env, workdir),
            test_validator_verdict=verdict,
            upload_threads=env_int(env, "UPLOAD_THREADS", 16, minimum=1),
            bus_retention_hours=env_float(env, "BUS_RETENTION_HOURS", 168.0),
            asset_name_pattern=_name_pattern(env, "ASSET_NAME_PATTERN",
                                             DEFAULT_ASSET_NAME_PATTERN),
            http_idle_timeout=env_float(env, "HTTP_IDLE_TIMEOUT", 60.0),
            http_body_timeout=env_float(env, "HTTP_BODY_TIMEOUT", 600.0),
            shutdown_grace=env_float(env, "SHUTDOWN_GRACE", 30.0),
            ingest_deadline=env_float(env, "INGEST_DEADLINE",
                                   env_float(env, "HTTP_BODY_TIMEOUT", 600.0) + 300.0),
            tus_expiry=env_int(env, "TUS_EXPIRY", 86400, minimum=60),
            tus_lease_seconds=env_int(env, "TUS_LEASE_SECONDS", 30, minimum=3),
            tus_cors_origins=_origins(env, "TUS_CORS_ORIGINS"),
            env=dict(env),
        )
