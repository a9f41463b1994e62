"""One-time callback URLs: HTTP verdicts for validators that cannot reach the bus (like
the MeerKAT stager's ``doneStaging`` call with its one-time code).

Every announcement carries ``callback_url`` =
``{PUBLIC_URL}/api/v1/callbacks/<request_id>?code=<expires>.<nonce>.<signature>``, where
the signature is HMAC-SHA256 with ``URL_SIGNING_KEY`` over ``request_id``, ``expires``
and the random ``nonce``, checked in constant time. It expires with the announcement's
signed fetch URL (``URL_EXPIRY`` after the upload).

One-time use is durable: a decisive verdict (``success``/``failure``) first claims the
code's nonce in the ``callback_codes`` table (primary key; migration 0003), then goes
through the verdict handler; if recording the verdict fails, the claim is released so the
validator can retry. A ``handoff`` does not use the code up: the validator keeps it for its
final verdict. A crash between claim and verdict leaves the code used and the payload
undecided, which ``VALIDATION_TIMEOUT`` settles.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from core import metrics
from core.verdicts import parse_verdict
from db import OPEN_FOR_VERDICT, Database, utcnow

logger = logging.getLogger(__name__)

CALLBACK_PREFIX = "/api/v1/callbacks"

callback_codes = Table(
    "callback_codes",
    MetaData(),
    Column("nonce", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("validation", String(16), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
)


def _signature(secret: bytes, request_id: str, expires: int, nonce: str) -> str:
    message = f"callback\n{request_id}\n{expires}\n{nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def make_code(secret: bytes, request_id: str, expires_in: int, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + expires_in)
    nonce = secrets.token_hex(16)
    return f"{expires}.{nonce}.{_signature(secret, request_id, expires, nonce)}"


def callback_url(base_url: str, secret: bytes, request_id: str, expires_in: int) -> str:
    code = make_code(secret, request_id, expires_in)
    return f"{base_url}{CALLBACK_PREFIX}/{quote(request_id)}?code={code}"


@dataclass(frozen=True)
class Code:
    expires: int
    nonce: str


def verify_code(secret: bytes, request_id: str, code: str | None,
                now: float | None = None) -> Code | None:
    """The code's parts when it is genuine for ``request_id`` and not expired, else None."""
    parts = (code or "").split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1] or len(parts[1]) > 64:
        return None
    expires, nonce, signature = int(parts[0]), parts[1], parts[2]
    if not hmac.compare_digest(_signature(secret, request_id, expires, nonce), signature):
        return None
    if expires < (time.time() if now is None else now):
        return None
    return Code(expires, nonce)


class CodeStore:
    """The used codes (blocking calls: run them in an executor)."""

    def __init__(self, database: Database) -> None:
        self.engine = database.engine

    def is_used(self, code: Code) -> bool:
        query = select(callback_codes.c.nonce).where(callback_codes.c.nonce == code.nonce)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def claim(self, code: Code, request_id: str, validation: str) -> bool:
        """Mark the code used; False when it already was (another request won)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(callback_codes).values(
                    nonce=code.nonce, request_id=request_id, validation=validation,
                    used_at=utcnow()))
        except IntegrityError:
            return False
        return True

    def release(self, code: Code) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(callback_codes).where(callback_codes.c.nonce == code.nonce))


class CallbackRecorder:
    """Checks a posted verdict's code and records the verdict through the same
    ``VerdictHandler`` as Kafka verdicts. Blocking: run ``record`` in an executor."""

    def __init__(self, secret: bytes, database: Database, verdicts: Callable[..., None]) -> None:
        self.secret = secret
        self.database = database
        self.codes = CodeStore(database)
        self.verdicts = verdicts

    def record(self, request_id: str, raw_code: str | None, body: dict[str, Any]) -> tuple[str, str]:
        """(outcome, upload status); outcome is ``recorded``, ``forbidden`` (forged,
        expired or used code), ``not_found`` or ``already_decided`` (a late verdict)."""
        code = verify_code(self.secret, request_id, raw_code)
        if code is None or self.codes.is_used(code):
            logger.warning("request_id=%s callback refused: %s code", request_id,
                           "forged or expired" if code is None else "used")
            return self._outcome("forbidden", "")
        data = {**body, "request_id": request_id}
        _, verdict, _ = parse_verdict(data)  # MalformedMessage: the caller answers 400
        upload = self.database.get_upload(request_id)
        if upload is None:
            return self._outcome("not_found", "")
        if upload["status"] not in OPEN_FOR_VERDICT:
            logger.info("request_id=%s late callback verdict %s ignored: already %s",
                        request_id, verdict, upload["status"])
            return self._outcome("already_decided", upload["status"])
        if verdict != "handoff" and not self.codes.claim(code, request_id, verdict):
            return self._outcome("forbidden", "")
        try:
            self.verdicts(data)
        except Exception:
            if verdict != "handoff":
                self.codes.release(code)
            raise
        after = self.database.get_upload(request_id) or upload
        logger.info("request_id=%s callback verdict %s: now %s", request_id, verdict,
                    after["status"])
        return self._outcome("recorded", after["status"])

    @staticmethod
    def _outcome(outcome: str, status: str) -> tuple[str, str]:
        metrics.CALLBACKS.labels(outcome).inc()
        return outcome, status
