"""``Content-Disposition`` for a download, safely quoted (RFC 6266 with RFC 5987's
``filename*``): ``attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>``.

The fallback keeps printable ASCII except ``"`` and ``\\`` (each non-ASCII character, quote,
backslash or control character becomes ``_``), so old clients get a usable name and no
header can be split or a parameter smuggled in; clients that read ``filename*`` get the
exact name. Only the base name is used: a path never reaches a client's save dialog.
"""
from __future__ import annotations

from urllib.parse import quote

MAX_NAME = 255


def base_name(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1][:MAX_NAME]


def content_disposition(filename: str) -> str:
    name = "".join(ch for ch in base_name(filename) if ch.isprintable()) or "download"
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in name)
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header
