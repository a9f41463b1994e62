"""Issue 6, item 10: fuzzing (hypothesis) over the multipart path (the streaming parser
directly, and the upload handler over HTTP) and over the OBJ parser.

Properties: a valid body parses to the same file and metadata however it is cut into
chunks; a mutated or random body only ever raises ``ApiError`` (a 4xx); over HTTP the
gateway never answers 5xx and leaves no partial data; ``check_obj`` never raises on any
input, and its fast path agrees with the line-by-line reference checker.
"""
from __future__ import annotations

import asyncio
import gzip
import http.client
import io
import threading
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpserver import HTTPServer

from core.services import Services
from core.settings import Settings
from tests.helpers import CT_TESTARENO, multipart
from upload.app import make_app
from upload.errors import ApiError
from upload.multipart import MultipartStream
from validators.obj import ObjLimits, _check, check_obj

FUZZ = settings(deadline=None, database=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

payloads = st.binary(max_size=3000)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
metadata = st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=5)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:]):
        yield data[start:end]


def parse(body: bytes, ctype: str, cuts: list[int]) -> MultipartStream:
    stream = MultipartStream({"Content-Type": ctype})
    for piece in chunked(body, cuts):
        stream.feed(piece)
    return stream


@FUZZ
@given(payloads, metadata, st.lists(st.integers(min_value=0), max_size=30))
def test_valid_bodies_parse_the_same_in_any_chunking(data: bytes, meta, cuts) -> None:  # type: ignore[no-untyped-def]
    body, ctype = multipart(data, metadata=meta)
    stream = parse(body, ctype, cuts)
    assert stream.complete
    file = stream.file
    assert file is not None and file.finished
    assert b"".join(file.take()) == data
    assert file.multipart_content_type == CT_TESTARENO
    if meta is not None:
        import json

        assert json.loads(stream.metadata_bytes() or b"") == meta


mutation = st.tuples(st.sampled_from(["flip", "insert", "delete", "cut"]),
                     st.integers(min_value=0), st.binary(min_size=1, max_size=8))


def mutate(body: bytes, mutations: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(body)
    for kind, where, data in mutations:
        at = where % (len(out) + 1)
        if kind == "flip" and out:
            out[at % len(out)] ^= data[0] or 1
        elif kind == "insert":
            out[at:at] = data
        elif kind == "delete":
            del out[at:at + len(data)]
        elif kind == "cut":
            del out[at:]
    return bytes(out)


@FUZZ
@given(payloads, metadata, st.lists(mutation, min_size=1, max_size=6),
       st.lists(st.integers(min_value=0), max_size=10))
def test_mutated_bodies_raise_only_api_errors(data: bytes, meta, mutations, cuts) -> None:  # type: ignore[no-untyped-def]
    body, ctype = multipart(data, metadata=meta)
    try:
        stream = parse(mutate(body, mutations), ctype, cuts)
        stream.complete, stream.file, stream.metadata_bytes()
    except ApiError as exc:
        assert 400 <= exc.status_code < 500


@FUZZ
@given(st.binary(max_size=2000), st.text(max_size=80))
def test_random_bodies_and_content_types_raise_only_api_errors(body: bytes, ctype: str) -> None:
    for content_type in (ctype, "multipart/form-data; " + ctype,
                         "multipart/form-data; boundary=" + ctype):
        try:
            stream = MultipartStream({"Content-Type": content_type})
            stream.feed(body)
            stream.complete, stream.file, stream.metadata_bytes()
        except ApiError as exc:
            assert 400 <= exc.status_code < 500


# -- over HTTP: the upload handler on a real server ------------------------------------------

class LiveGateway:
    """The Tornado app on its own event loop thread (in process, loopback)."""

    def __init__(self, workdir: Path) -> None:
        self.settings = Settings.from_env({"WORKDIR": str(workdir), "MAX_LENGTH": "100000",
                                           "URL_SIGNING_KEY": "fuzz"})
        self.services = Services.build(self.settings)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = HTTPServer(make_app(self.services))
            [sock] = __import__("tornado.netutil").netutil.bind_sockets(0, "127.0.0.1")
            self.port = sock.getsockname()[1]
            server.add_sockets([sock])
            self.server = server
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    def post(self, body: bytes, ctype: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request("POST", "/api/v1/upload", body=body,
                               headers={"Content-Type": ctype})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.stop()
            await self.server.close_all_connections()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.services.close()
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    gateway = LiveGateway(tmp_path_factory.mktemp("fuzz") / "work")
    yield gateway
    gateway.close()


@settings(deadline=None, database=None, max_examples=150,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(payloads, metadata, st.lists(mutation, max_size=5))
def test_upload_handler_never_answers_5xx(live: LiveGateway, data: bytes, meta, mutations) -> None:  # type: ignore[no-untyped-def]
    body, ctype = multipart(data, metadata=meta)
    status = live.post(mutate(body, mutations), ctype)
    assert status < 500
    if not mutations:
        assert status == 202
    incomplete = live.settings.workdir / live.settings.s3_quarantine / ".incomplete"
    assert not any(incomplete.iterdir()), "partial upload left behind"


# -- the OBJ parser -------------------------------------------------------------------------

def obj_line() -> st.SearchStrategy[str]:
    number = st.one_of(st.integers(-5, 5).map(str), st.floats(allow_nan=True, allow_infinity=True,
                                                              width=32).map(repr),
                       st.sampled_from(["1e5", "-.5", "+3.", "nan", "inf", "abc", "", "1e", "--1"]))
    index = st.integers(-8, 12).map(str)
    ref = st.one_of(index, st.tuples(index, index).map("/".join),
                    st.tuples(index, index).map(lambda p: f"{p[0]}//{p[1]}"),
                    st.tuples(index, index, index).map("/".join))
    return st.one_of(
        st.lists(number, min_size=0, max_size=7).map(lambda n: "v " + " ".join(n)),
        st.lists(number, min_size=0, max_size=4).map(lambda n: "vt " + " ".join(n)),
        st.lists(number, min_size=0, max_size=4).map(lambda n: "vn " + " ".join(n)),
        st.lists(ref, min_size=0, max_size=5).map(lambda r: "f " + " ".join(r)),
        st.lists(index, min_size=0, max_size=3).map(lambda r: "l " + " ".join(r)),
        st.lists(index, min_size=0, max_size=2).map(lambda r: "p " + " ".join(r)),
        st.sampled_from(["# comment", "", "o thing", "g group", "s off", "usemtl m",
                         "mtllib x.mtl", "v 1 2 3 # trailing", "f 1 2 3\\", "weird stmt",
                         "\t v 0 0 0", "v\t1\t2\t3"]),
    )


obj_texts = st.tuples(
    st.lists(st.just("v 0 0 0"), max_size=6),
    st.lists(obj_line(), max_size=60),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
).map(lambda t: (("\ufeff" if t[3] else "") + t[2].join(t[0] + t[1])).encode())


@FUZZ
@given(data=st.one_of(obj_texts, st.binary(max_size=3000)), gzipped=st.booleans(),
       chunk=st.integers(min_value=1, max_value=64))
def test_obj_parser_never_raises_and_fast_path_agrees(data: bytes, gzipped: bool, chunk: int,
                                                      monkeypatch_obj_chunk) -> None:  # type: ignore[no-untyped-def]
    raw = gzip.compress(data) if gzipped else data
    limits = ObjLimits(max_line_bytes=256, max_uncompressed_bytes=100_000)
    monkeypatch_obj_chunk(chunk)
    fast = check_obj(io.BytesIO(raw), limits)
    reference = _check(io.BytesIO(raw), limits, None, fast=False)
    assert fast.ok == reference.ok, (fast, reference)
    assert fast.reason == reference.reason, (fast, reference)
    if fast.ok:
        assert (fast.vertices, fast.texcoords, fast.normals, fast.faces) == (
            reference.vertices, reference.texcoords, reference.normals, reference.faces)


@pytest.fixture
def monkeypatch_obj_chunk():  # type: ignore[no-untyped-def]
    """Shrink the OBJ reader's block size so that lines straddle blocks."""
    import validators.obj as obj

    original = obj._CHUNK

    def set_chunk(size: int) -> None:
        obj._CHUNK = size
    yield set_chunk
    obj._CHUNK = original
