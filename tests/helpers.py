"""Small helpers shared by tests: multipart bodies, identities, free ports, waiting."""
from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from typing import Any, Callable

CT_TESTARENO = "application/vnd.redhat.testareno.thing+tgz"


def multipart(file_bytes: bytes | None, content_type: str = CT_TESTARENO, name: str = "file",
              filename: str = "payload.tgz", metadata: Any = None,
              extra_parts: list[tuple[str, bytes]] | None = None) -> tuple[bytes, str]:
    boundary = "----gw" + uuid.uuid4().hex
    out = bytearray()
    for part_name, value in extra_parts or []:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{part_name}\"\r\n\r\n"
                ).encode() + value + b"\r\n"
    if metadata is not None:
        raw = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n"
                ).encode() + raw + b"\r\n"
    if file_bytes is not None:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
        out += file_bytes + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def identity(account: str | None = "000001", org_id: str | None = "org1") -> str:
    ident: dict[str, Any] = {"identity": {}}
    if account is not None:
        ident["identity"]["account_number"] = account
    if org_id is not None:
        ident["identity"]["org_id"] = org_id
    return base64.b64encode(json.dumps(ident).encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
