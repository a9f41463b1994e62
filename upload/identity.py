"""The ``x-rh-identity`` header, read by ``core.intake.parse_identity``; here its errors
become API errors (400 ``malformed_identity``)."""
from __future__ import annotations

from core import intake
from core.intake import Identity, IntakeError
from upload.errors import ApiError

__all__ = ["Identity", "parse_identity"]


def parse_identity(header: str | None) -> Identity | None:
    """None when the header is absent; ``ApiError`` (400) when it cannot be read."""
    try:
        return intake.parse_identity(header)
    except IntakeError as exc:
        raise ApiError(exc.code, exc.message) from None
