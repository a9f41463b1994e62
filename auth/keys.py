"""API keys: created and revoked from the command line, stored hashed.

A key is the token ``gwk_<id>_<secret>``: ``id`` (16 hex characters) names its row,
``secret`` is 32 random bytes (``secrets.token_urlsafe``). Only the argon2id hash of the
whole token is stored (argon2-cffi); the token is shown once, when the key is created.
A token is high-entropy, so the hash uses argon2's low-memory profile (RFC 9106's second
recommendation scaled down: 1 pass, 19 MiB, as OWASP's minimum) rather than the password
profile; a process remembers the last token it verified per key, so a busy client costs
one hash per process, and every request still reads the row (revocation applies at once).
"""
from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from auth.schema import api_keys

SCOPES = ("staff", "areas", "admin", "pulls", "status")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN = re.compile(r"^gwk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
HASHER = PasswordHasher(time_cost=1, memory_cost=19 * 1024, parallelism=1)


class KeyProblem(ValueError):
    """A key cannot be created or revoked as asked (the message says why)."""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise KeyProblem(f"scopes must be one or more of {', '.join(SCOPES)}"
                        + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return tuple(sorted(set(scopes)))


def create_key(engine: Engine, name: str, scopes: list[str] | tuple[str, ...]) -> str:
    """Create a key and return its token (shown once; only its hash is kept)."""
    if not NAME.match(name):
        raise KeyProblem("a key name is 1 to 64 letters, digits, '.', '_' or '-'")
    chosen = check_scopes(scopes)
    key_id = secrets.token_hex(8)
    token = f"gwk_{key_id}_{secrets.token_urlsafe(32)}"
    try:
        with engine.begin() as conn:
            conn.execute(insert(api_keys).values(
                id=key_id, name=name, scopes=" ".join(chosen), hash=HASHER.hash(token),
                created_at=_now()))
    except IntegrityError:
        raise KeyProblem(f"a key named {name!r} exists already (revoked keys keep their "
                        "name)") from None
    return token


def list_keys(engine: Engine) -> list[KeyInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(api_keys).order_by(api_keys.c.name)).mappings().all()
    return [KeyInfo(r["id"], r["name"], tuple(r["scopes"].split()), r["created_at"],
                    r["revoked_at"]) for r in rows]


def revoke_key(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        done = conn.execute(update(api_keys).where(api_keys.c.name == name,
                                                   api_keys.c.revoked_at.is_(None))
                            .values(revoked_at=_now())).rowcount
    if not done:
        raise KeyProblem(f"no active key named {name!r}")


class KeyVerifier:
    """Finds the key a token belongs to (blocking: one row read, at most one hash)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._verified: dict[str, str] = {}  # key id -> the token last verified for it
        self._lock = threading.Lock()

    def verify(self, token: str) -> KeyInfo | None:
        """The active key of ``token``, or None (unknown, revoked, or a wrong secret)."""
        match = TOKEN.match(token)
        if match is None:
            return None
        key_id = match.group(1)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        if row is None or row["revoked_at"] is not None:
            return None
        with self._lock:
            known = self._verified.get(key_id)
        if known is None or not hmac.compare_digest(known, token):
            try:
                HASHER.verify(row["hash"], token)
            except (VerificationError, InvalidHashError):
                return None
            with self._lock:
                self._verified[key_id] = token
        return KeyInfo(row["id"], row["name"], tuple(row["scopes"].split()), row["created_at"],
                       None)
