"""The association API and the staff page, served by the gateway.

- ``GET /api/v1/asset-transfers?case_number=…&status=…[&limit=…]``: transfers, ordered by
  case, step and file name; ``status`` is one or more (comma separated) of ``unmatched``,
  ``created``, ``uploaded``, ``ready``, ``associated``, ``bundled``, ``invalid``.
- ``POST /api/v1/treatment-plans/<uuid>/asset-transfers`` ``{"transfer_ids": [...]}``:
  associates them with the plan as the caller (the signed-in staff user's name, or
  ``key:<name>`` for an API key with the scope ``staff``; a ``user`` field is ignored),
  before or after their uploads finished; again with the same plan is fine. 200 with the plan document;
  400 ``bad_request``, 404 ``not_found`` (an unknown id), 409 ``already_associated``
  (another plan has it) or ``not_associable`` (unmatched name, not OBJ, failed validation,
  two files of one name in the plan).
- ``GET /api/v1/treatment-plans/<uuid>``: the plan's transfers and assets (bundles, with a
  signed URL when done); 404 when nothing was ever associated with it.
- ``/staff/``: the staff page (``consumer/static``).

Every endpoint needs a signed-in staff user (whose requests that change state carry the
session's CSRF token) or an API key with the scope ``staff`` (auth/); the page sends
anyone else to ``/auth/login``. A staff user of an org (``users add NAME --org ORG``, or
the identity provider's ``org_id`` claim) sees and associates only the transfers whose
uploads that org made, and only plans that hold no one else's (404 otherwise).

Also under ``/api/ingress/v1/``. Database calls run on the shared executor.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import tornado.web

from auth import Principal, require_scope, require_signed_in_page
from consumer import plans, records
from core.services import Services
from upload.base import ApiHandler
from upload.errors import ApiError

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_IDS = 1000
MAX_USER = 255
DEFAULT_LIMIT, MAX_LIMIT = 500, 5000
T = TypeVar("T")


def plan_uuid_of(raw: str) -> str:
    value = raw.strip().lower()
    if not UUID.match(value):
        raise ApiError("bad_request", f"{raw!r} is not a treatment plan uuid")
    return value


def parse_association(body: bytes) -> tuple[list[int], str | None]:
    try:
        data = json.loads(body or b"null")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError("bad_request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError("bad_request", 'the body must be {"transfer_ids": [...], "user": "..."}')
    ids, user = data.get("transfer_ids"), data.get("user")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
        raise ApiError("bad_request", f"transfer_ids must be a list of 1 to {MAX_IDS} transfer ids")
    if not isinstance(user, str) or not user.strip() or len(user.strip()) > MAX_USER:
        user = None  # only read when AUTH_REQUIRED is off and no one is signed in
    return sorted(set(ids)), user.strip() if user else None


def parse_statuses(raw: str | None) -> list[str]:
    statuses = [s.strip() for s in (raw or "").split(",") if s.strip()]
    unknown = [s for s in statuses if s not in records.STATUSES]
    if unknown:
        raise ApiError("bad_request", f"unknown status {', '.join(unknown)}; use "
                       f"{', '.join(records.STATUSES)}")
    return statuses


class BundlerApiHandler(ApiHandler):
    principal: Principal | None

    @require_scope("staff")
    async def prepare(self) -> None:
        """A signed-in staff user, or an API key with the scope ``staff``."""

    @property
    def org_id(self) -> str | None:
        """The caller's org: a staff user of an org sees only that org's transfers."""
        return self.principal.org_id if self.principal is not None else None

    def acting_user(self, named: str | None) -> str:
        """Who the association is recorded as: the caller, never a name from the body
        (that one only when AUTH_REQUIRED is off and no one is signed in)."""
        if self.principal is None:
            return named or "anonymous"
        if self.principal.kind == "key":
            return f"key:{self.principal.name}"
        return self.principal.name

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.services.executor, func, *args)

    def signed_url(self, key: str, filename: str | None = None) -> str:
        return self.services.storage.signed_url("perm", key, self.services.settings.url_expiry,
                                                filename)

    def read_plan(self, plan_uuid: str) -> dict[str, Any] | None:
        with self.services.database.engine.connect() as conn:
            return plans.plan_document(conn, plan_uuid, self.signed_url, self.org_id)


class TransfersHandler(BundlerApiHandler):
    async def get(self) -> None:
        case_number = (self.get_query_argument("case_number", "") or "").strip() or None
        statuses = parse_statuses(self.get_query_argument("status", None))
        try:
            limit = int(self.get_query_argument("limit", str(DEFAULT_LIMIT)))
        except ValueError:
            raise ApiError("bad_request", "limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError("bad_request", f"limit must be between 1 and {MAX_LIMIT}")
        rows = await self.run(self._list, case_number, statuses, limit)
        self.write_json({"transfers": rows, "count": len(rows)})

    def _list(self, case_number: str | None, statuses: Sequence[str], limit: int) -> list[dict[str, Any]]:
        with self.services.database.engine.connect() as conn:
            return records.list_transfers(conn, case_number, statuses, limit=limit,
                                          org_id=self.org_id)


class PlanTransfersHandler(BundlerApiHandler):
    async def post(self, raw_uuid: str) -> None:
        plan_uuid = plan_uuid_of(raw_uuid)
        ids, named = parse_association(self.request.body)
        user = self.acting_user(named)
        try:
            await self.run(self._associate, plan_uuid, ids, user)
        except plans.AssociationError as exc:
            logger.info("plan=%s association of %s by %s refused: %s", plan_uuid, ids, user,
                        exc.message)
            raise ApiError(exc.code, exc.message) from None
        logger.info("plan=%s transfers %s associated by %s", plan_uuid, ids, user)
        self.write_json(await self.run(self.read_plan, plan_uuid))

    def _associate(self, plan_uuid: str, ids: list[int], user: str) -> None:
        with self.services.database.engine.begin() as conn:
            plans.associate(conn, plan_uuid, ids, user, self.org_id)


class PlanHandler(BundlerApiHandler):
    async def get(self, raw_uuid: str) -> None:
        plan_uuid = plan_uuid_of(raw_uuid)
        document = await self.run(self.read_plan, plan_uuid)
        if document is None:
            raise ApiError("not_found", f"no treatment plan {plan_uuid} has asset transfers")
        self.write_json(document)


class StaffPageHandler(tornado.web.StaticFileHandler):
    @require_signed_in_page
    async def prepare(self) -> None:
        """Only for signed-in staff: anyone else is sent to the sign-in page."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")


def routes(services: Services, prefixes: Sequence[str]) -> list[Any]:
    deps = {"services": services}
    table: list[Any] = []
    for prefix in prefixes:
        table += [
            (rf"{prefix}/asset-transfers", TransfersHandler, deps),
            (rf"{prefix}/treatment-plans/([^/]+)/asset-transfers", PlanTransfersHandler, deps),
            (rf"{prefix}/treatment-plans/([^/]+)", PlanHandler, deps),
        ]
    table += [
        (r"/staff", tornado.web.RedirectHandler, {"url": "/staff/"}),
        (r"/staff/(.*)", StaffPageHandler, {"path": str(STATIC), "default_filename": "staff.html"}),
    ]
    return table
