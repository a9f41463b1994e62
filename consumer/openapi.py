"""The association API's part of the OpenAPI description (merged by upload/openapi.py)."""
from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_PLAN_UUID = {"name": "plan_uuid", "in": "path", "required": True,
              "schema": {"type": "string", "format": "uuid"}}
# a signed-in staff user (session cookie; X-CSRF-Token on POST) or an API key with the
# scope staff
_AUTH = {"401": _ERROR, "403": _ERROR}
_SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"staffSession": []}]
_STATUSES = ["unmatched", "created", "uploaded", "ready", "associated", "bundled", "invalid"]

PATHS: dict[str, Any] = {
    "/api/v1/asset-transfers": {"get": {
        "summary": "Asset transfer records (one per content hash), by case and status",
        "parameters": [
            {"name": "case_number", "in": "query", "schema": {"type": "string"}},
            {"name": "status", "in": "query", "description": "comma separated: " + ", ".join(_STATUSES),
             "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 500,
                                                        "maximum": 5000}},
        ],
        "security": _SECURITY,
        "responses": {"200": {"description": "{\"transfers\": [...], \"count\": n}"}, "400": _ERROR,
                      **_AUTH},
    }},
    "/api/v1/treatment-plans/{plan_uuid}/asset-transfers": {"post": {
        "summary": "Associate transfers with a treatment plan, as the signed-in user (or key)",
        "parameters": [_PLAN_UUID],
        "security": _SECURITY,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["transfer_ids"],
            "properties": {"transfer_ids": {"type": "array", "items": {"type": "integer"}}}}}}},
        "responses": {"200": {"description": "the plan, as GET returns it"},
                      "400": _ERROR, "404": _ERROR, **_AUTH,
                      "409": {**_ERROR, "description": "already_associated or not_associable"}},
    }},
    "/api/v1/treatment-plans/{plan_uuid}": {"get": {
        "summary": "A treatment plan's transfers and its PROVPREV bundles (signed URLs)",
        "parameters": [_PLAN_UUID],
        "security": _SECURITY,
        "responses": {"200": {"description": "transfers and assets"}, "400": _ERROR, "404": _ERROR,
                      **_AUTH},
    }},
}
