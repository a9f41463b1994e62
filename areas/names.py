"""File names inside an area: a relative path of ``/``-separated segments, recorded and
used as the name the validator sees, never as a path of ours (objects are stored under
keys of their own)."""
from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = 1024
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX8 = re.compile(r"^[0-9a-f]{8}$")


def name_problem(name: str) -> str | None:
    """Why ``name`` is refused (None: it is fine): empty, too long, a leading ``/``,
    ``..`` anywhere, an empty or ``.`` segment, or a control character."""
    if not name:
        return "the file name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"the file name is over {MAX_NAME_BYTES} bytes"
    if name.startswith("/"):
        return "the file name starts with /"
    if ".." in name:
        return "the file name contains .."
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        return "the file name contains control characters"
    if any(segment in ("", ".") for segment in name.split("/")):
        return "the file name has an empty or . segment"
    return None


def declared_checksums(sha256: object, crc32c: object) -> dict[str, str] | str:
    """The checksums a client declares (lower-case hex: sha256 of 64 digits, crc32c of
    8), or why they are refused."""
    declared: dict[str, str] = {}
    for field, value, pattern in (("sha256", sha256, HEX64), ("crc32c", crc32c, HEX8)):
        if value is None:
            continue
        if not isinstance(value, str) or not pattern.match(value.strip().lower()):
            return f"{field} must be hex ({64 if field == 'sha256' else 8} digits)"
        declared[field] = value.strip().lower()
    return declared
