"""Every topic the system uses, in one place."""
from __future__ import annotations

from core.settings import Settings

VALIDATION = "platform.upload.validation"
AVAILABLE = "platform.upload.available"
PAYLOAD_STATUS = "platform.payload-status"
ASSET_TRANSFER = "platform.asset-transfer"


def service_topic(service: str) -> str:
    return f"platform.upload.{service}"


def dead_letter_topic(service: str) -> str:
    return f"platform.upload.{service}.dlq"


def all_topics(settings: Settings) -> list[str]:
    topics = [VALIDATION, AVAILABLE, PAYLOAD_STATUS, ASSET_TRANSFER]
    for service in settings.valid_upload_types:
        topics += [service_topic(service), dead_letter_topic(service)]
    return topics
