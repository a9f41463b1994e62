"""Downloads carry the file name (issue 13 item 5): ``Content-Disposition`` with the
original file name (``.gz`` added when stored compressed) or the bundle's, quoted per
RFC 6266 / RFC 5987, signed with the URL so that it cannot be changed."""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest

from core.services import Services
from storage.disposition import content_disposition
from tests.helpers import identity, multipart
from tests.upload.test_upload import UPLOAD


def filename_of(header: str) -> str | None:
    """The file name a browser reads from ``Content-Disposition``: ``filename*`` (RFC 5987)
    when it is there (RFC 6266 section 4.3), else ``filename``."""
    extended = re.search(r"filename\*=UTF-8''([^;\s]+)", header)
    if extended:
        return unquote(extended.group(1), errors="strict")
    plain = re.search(r'filename="([^"]*)"', header)
    return plain.group(1) if plain else None


@pytest.mark.parametrize("name", ["report.tgz", "Ünïcode report \"v2\".tgz",
                                  "semi;colon, comma.obj", "back\\slash.txt", "日本語.obj",
                                  "lab1/C1_Step1.obj"])
def test_content_disposition_quotes_any_name(name: str) -> None:
    header = content_disposition(name)
    assert header.startswith("attachment; filename=\"")
    assert header.isascii() and "\r" not in header and "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert '"' not in fallback and "\\" not in fallback
    assert filename_of(header) == name.replace("\\", "/").rsplit("/", 1)[-1]


def test_control_characters_never_reach_the_header() -> None:
    header = content_disposition("evil\r\nSet-Cookie: x=1.txt")
    assert "\r" not in header and "\n" not in header
    assert filename_of(header) == "evilSet-Cookie: x=1.txt"


@pytest.mark.parametrize("name", ["Ünïcode report \"v2\".tgz", " spaced .tgz "])
@pytest.mark.gen_test
async def test_payload_downloads_under_its_file_name(http_client, base_url,  # type: ignore[no-untyped-def]
                                                     services: Services, name: str) -> None:
    body, ctype = multipart(b"payload bytes", filename=name)
    response = await http_client.fetch(base_url + UPLOAD, method="POST", body=body,
                                       headers={"Content-Type": ctype,
                                                "x-rh-identity": identity()})
    assert response.code == 202, response.body
    [row] = services.database.claim_outbox(10)[:1]
    announcement = json.loads(row.value)
    download = await http_client.fetch(announcement["url"])
    assert download.body == b"payload bytes"
    assert filename_of(download.headers["Content-Disposition"]) == name
    # the name is signed: another one is refused
    parts = urlsplit(announcement["url"])
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = f"{parts.scheme}://{parts.netloc}{parts.path}?" + urlencode(
        {**query, "filename": "other.exe"})
    refused = await http_client.fetch(forged, raise_error=False)
    assert refused.code == 403
