"""The test validator: answers every ``testareno`` announcement with the verdict named by
``TEST_VALIDATOR_VERDICT`` (success by default), after fetching the payload through its
signed URL and checking its sha256, so a newcomer sees the whole loop turn."""
from __future__ import annotations

from typing import Any, BinaryIO

from validators.loop import Check, Verdict


def make_check(verdict: str) -> Check:
    def check(announcement: dict[str, Any], payload: BinaryIO) -> Verdict:
        reason = None if verdict == "success" else f"test validator answers {verdict}"
        return Verdict(verdict, reason)
    return check


def from_settings(settings: Any) -> Check:
    """The registry's factory (validators.CHECKS)."""
    return make_check(settings.test_validator_verdict)
