"""The association API's part of the OpenAPI description (merged by upload/openapi.py)."""
from __future__ import annotations

from typing import Any

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_PLAN_UUID = {"name": "plan_uuid", "in": "path", "required": True,
              "schema": {"type": "string", "format": "uuid"}}
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
        "responses": {"200": {"description": "{\"transfers\": [...], \"count\": n}"}, "400": _ERROR},
    }},
    "/api/v1/treatment-plans/{plan_uuid}/asset-transfers": {"post": {
        "summary": "Associate transfers with a treatment plan, as a named user",
        "parameters": [_PLAN_UUID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["transfer_ids", "user"],
            "properties": {"transfer_ids": {"type": "array", "items": {"type": "integer"}},
                           "user": {"type": "string"}}}}}},
        "responses": {"200": {"description": "the plan, as GET returns it"},
                      "400": _ERROR, "404": _ERROR,
                      "409": {**_ERROR, "description": "already_associated or not_associable"}},
    }},
    "/api/v1/treatment-plans/{plan_uuid}": {"get": {
        "summary": "A treatment plan's transfers and its PROVPREV bundles (signed URLs)",
        "parameters": [_PLAN_UUID],
        "responses": {"200": {"description": "transfers and assets"}, "400": _ERROR, "404": _ERROR},
    }},
}
