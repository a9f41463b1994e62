"""Helpers shared by the fault tests: uploads over plain http.client from many threads,
and a look at what storage holds after a fault."""
from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from tests.helpers import CT_TESTARENO, identity, multipart


@dataclass
class Result:
    index: int
    status: int  # 0: no answer (connection failed or cut)
    body: dict[str, Any]
    error: str = ""

    @property
    def request_id(self) -> str | None:
        value = self.body.get("request_id")
        return value if isinstance(value, str) else None


def upload(port: int, data: bytes, index: int = 0, request_id: str | None = None,
           timeout: float = 60, chunk: int = 0, pause: float = 0.0,
           content_type: str = CT_TESTARENO, headers: dict[str, str] | None = None) -> Result:
    """One upload. With ``chunk``, the body goes out in pieces of that size with ``pause``
    seconds between them (a slow client)."""
    body, ctype = multipart(data, content_type=content_type)
    all_headers = {"Content-Type": ctype, "Content-Length": str(len(body)),
                   "x-rh-identity": identity()}
    if request_id:
        all_headers["x-rh-insights-request-id"] = request_id
    all_headers.update(headers or {})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest("POST", "/api/v1/upload")
        for name, value in all_headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        step = chunk or len(body)
        try:
            for start in range(0, len(body), step):
                connection.send(body[start:start + step])
                if pause and start + step < len(body):
                    time.sleep(pause)
        except OSError as exc:
            # the server may answer (413, 503) and close before the body is all sent
            send_error = exc
        else:
            send_error = None
        try:
            response = connection.getresponse()
        except (OSError, http.client.HTTPException):
            if send_error is not None:
                raise send_error from None
            raise
        raw = response.read()
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            answer = {"raw": raw[:200].decode("latin-1")}
        return Result(index, response.status, answer)
    except (OSError, http.client.HTTPException) as exc:
        return Result(index, 0, {}, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


def run_concurrently(count: int, threads: int, job: Callable[[int], Result]) -> list[Result]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(job, range(count)))


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def bucket_files(workdir: Path, bucket_dir: str) -> tuple[list[Path], list[Path]]:
    """(committed objects, leftovers in .incomplete) of one localdisk bucket."""
    root = workdir / bucket_dir
    incomplete = sorted((root / ".incomplete").glob("*")) if (root / ".incomplete").exists() else []
    objects = sorted(p for p in root.rglob("*") if p.is_file() and ".incomplete" not in p.parts)
    return objects, incomplete


def uploads_table(workdir: Path) -> dict[str, dict[str, Any]]:
    """request_id → row of the gateway's SQLite database (read-only)."""
    conn = sqlite3.connect(f"file:{workdir / 'gateway.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return {row["request_id"]: dict(row) for row in conn.execute("SELECT * FROM uploads")}
    finally:
        conn.close()


def count_by(values: Iterable[Any]) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
