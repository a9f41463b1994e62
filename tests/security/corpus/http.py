"""Malformed HTTP requests for the gateway: broken multipart bodies, hostile file names,
wrong content types, huge headers, many parts, forged and malformed identities and
metadata, bad request lines, bad download signatures.

Every multipart case carries a correct Content-Length, so the gateway sees a complete
HTTP request with a broken body; cases marked ``half_close`` end early on purpose and the
client closes its side (the server may then close without an answer).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Iterator

B = b"c0rpusB0undary"
CT_OK = b"application/vnd.redhat.testareno.corpus+tgz"


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    # statuses the gateway may answer; None: any status below 500
    expect: frozenset[int] | None = None
    # the server may close without answering (oversized request line/headers, truncation)
    may_close: bool = False
    half_close: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


def b64(value: object) -> bytes:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw)


def request(body: bytes, content_type: bytes = b"multipart/form-data; boundary=" + B,
            headers: list[bytes] | None = None, path: bytes = b"/api/v1/upload",
            method: bytes = b"POST", length: bytes | None = None) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    lines.append(b"Content-Length: " + (length if length is not None else str(len(body)).encode()))
    lines += headers or []
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def part(name: bytes = b"file", data: bytes = b"payload", filename: bytes | None = b"f.tgz",
         content_type: bytes | None = CT_OK, disposition: bytes | None = None,
         extra: list[bytes] | None = None) -> bytes:
    headers = []
    if disposition is None:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
    headers.append(b"Content-Disposition: " + disposition)
    if content_type is not None:
        headers.append(b"Content-Type: " + content_type)
    headers += extra or []
    return b"--" + B + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + data + b"\r\n"


END = b"--" + B + b"--\r\n"
GOOD = part() + END


def multipart_cases() -> Iterator[Case]:
    bad = frozenset({400})
    yield Case("mp-no-closing-boundary", request(part()), bad)
    yield Case("mp-no-closing-boundary-no-crlf", request(part()[:-2]), bad)
    yield Case("mp-closing-boundary-without-dashes", request(part() + b"--" + B + b"\r\n"), bad)
    for cut in (5, 12, 20, 40, 60, 80, 100, 110, len(GOOD) - 12, len(GOOD) - 5, len(GOOD) - 3):
        yield Case(f"mp-truncated-at-{cut}", request(GOOD[:cut]), bad)
    yield Case("mp-empty-body", request(b""), bad)
    yield Case("mp-only-closing", request(END), bad)
    yield Case("mp-wrong-boundary", request(GOOD.replace(B, b"otherBoundary")), bad)
    yield Case("mp-boundary-case-changed", request(GOOD.replace(B, B.upper())), bad)
    yield Case("mp-preamble-garbage", request(b"garbage\r\n" * 50 + GOOD), frozenset({202, 400}))
    yield Case("mp-epilogue-garbage", request(GOOD + b"trailing junk" * 100), frozenset({202, 400}))
    yield Case("mp-lf-only-line-ends", request(GOOD.replace(b"\r\n", b"\n")), bad)
    yield Case("mp-cr-only-line-ends", request(GOOD.replace(b"\r\n", b"\r")), bad)
    yield Case("mp-header-without-colon",
               request(b"--" + B + b"\r\nContent-Disposition form-data\r\n\r\nx\r\n" + END), bad)
    yield Case("mp-headers-never-end",
               request(b"--" + B + b"\r\nContent-Disposition: form-data; name=\"file\"\r\n" + END),
               bad)
    yield Case("mp-huge-part-header", request(part(extra=[b"X-Big: " + b"a" * 200_000]) + END))
    yield Case("mp-huge-disposition",
               request(part(filename=b"n" * 300_000) + END), frozenset({202, 400}))
    yield Case("mp-1000-part-headers",
               request(part(extra=[b"X-H%d: v" % i for i in range(1000)]) + END))
    yield Case("mp-nul-in-part-header", request(part(extra=[b"X-N: a\0b"]) + END))
    yield Case("mp-header-obs-fold", request(part(extra=[b"X-F: a", b" folded"]) + END))
    for count in (100, 10_000, 50_000):
        many = b"".join(part(b"junk%d" % i, b"x", None, None) for i in range(count))
        yield Case(f"mp-{count}-unknown-parts-then-file", request(many + GOOD),
                   frozenset({202, 400, 413}))
    yield Case("mp-20000-parts-no-file",
               request(b"".join(part(b"j", b"", None, None) for _ in range(20_000)) + END), bad)
    yield Case("mp-two-file-parts", request(part() + part() + END), bad)
    yield Case("mp-file-and-upload-parts", request(part() + part(b"upload") + END), bad)
    yield Case("mp-two-metadata-parts",
               request(part(b"metadata", b"{}", None, None) * 2 + GOOD), bad)
    yield Case("mp-no-file-part", request(part(b"other") + END), bad)
    yield Case("mp-only-metadata", request(part(b"metadata", b"{}", None, None) + END), bad)
    names = {
        "nul": b"a\0b.tgz", "dotdot": b"../../../etc/passwd", "dotdot-win": b"..\\..\\boot.ini",
        "absolute": b"/etc/shadow", "only-dots": b"..", "dot": b".", "empty": b"",
        "long": b"L" * 10_000, "invalid-utf8": b"\xff\xfe\xfd.tgz", "overlong-utf8": b"\xc0\xaf",
        "rtl-override": "evil\u202egpj.exe".encode(), "crlf": b"a\\r\\nX-Injected: 1",
        "percent-nul": b"%00.tgz", "control-chars": bytes(range(1, 32)),
        "quote": b'a\\"b', "semicolon": b"a; name=upload", "spaces": b"   ",
        "unicode": "fichier-\u00e9\u4e2d.tgz".encode(), "dotdot-nul": b"../\0../x",
        "tilde": b"~root/.ssh/authorized_keys", "device": b"/dev/zero", "con": b"CON",
        "backslash-only": b"\\", "slash-only": b"/", "nested": b"a/b/c/../../d",
    }
    for label, filename in names.items():
        yield Case(f"mp-filename-{label}", request(part(filename=filename) + END),
                   frozenset({202, 400}), tags=("accepted-ok",))
    yield Case("mp-filename-star-utf8",
               request(part(disposition=b"form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fx%00")
                       + END), frozenset({202, 400}))
    types = {
        "missing": None, "empty": b"", "text-plain": b"text/plain",
        "octet": b"application/octet-stream", "unknown-service": b"application/vnd.redhat.nosuch.x",
        "no-category": b"application/vnd.redhat.testareno", "empty-category":
        b"application/vnd.redhat.testareno.", "double-dot": b"application/vnd.redhat..x",
        "uppercase-service": b"application/vnd.redhat.TESTARENO.x", "long": CT_OK + b"a" * 20_000,
        "invalid-utf8": b"application/vnd.redhat.\xff\xfe.x", "nul": b"application/vnd.redhat.test\0areno.x",
        "with-params": CT_OK + b"; charset=utf-8; x=\"y\"", "spaces": b"  " + CT_OK + b"  ",
        "plus-only": b"application/vnd.redhat.testareno.x+", "traversal":
        b"application/vnd.redhat.../../x", "regex-dos": b"application/vnd.redhat.a." + b"a." * 5000 + b"!",
        "unicode": "application/vnd.redhat.t\u00e9st.x".encode(), "semicolon-only": b";",
    }
    for label, ctype in types.items():
        yield Case(f"mp-file-content-type-{label}", request(part(content_type=ctype) + END),
                   frozenset({202, 400, 415}))
    metadata = {
        "not-json": b"{not json", "array": b"[1,2]", "string": b"\"s\"", "null": b"null",
        "number": b"42", "invalid-utf8": b"{\"a\": \"\xff\"}", "deep-objects": b"{\"a\":" * 30_000
        + b"1" + b"}" * 30_000, "deep-arrays": b"{\"a\":" + b"[" * 60_000 + b"]" * 60_000 + b"}",
        "deep-within-limit": b"{\"a\":" + b"[" * 30_000 + b"]" * 30_000 + b"}",
        "deep-objects-within-limit": b"{\"a\":" * 10_000 + b"1" + b"}" * 10_000,
        "too-big": b"{\"a\": \"" + b"x" * 70_000 + b"\"}", "nan": b"{\"a\": NaN}",
        "huge-number": b"{\"a\": 1e999999}", "huge-int": b"{\"a\": " + b"9" * 50_000 + b"}",
        "duplicate-keys": b"{\"a\":1,\"a\":2}", "bom": b"\xef\xbb\xbf{}", "utf16": "{}".encode("utf-16"),
        "empty": b"", "nul": b"{\"a\":\"\0\"}", "lone-surrogate": b"{\"a\":\"\\ud800\"}",
        "trailing-garbage": b"{} {}",
    }
    for label, raw in metadata.items():
        body = part(b"metadata", raw, None, None) + GOOD
        yield Case(f"mp-metadata-{label}", request(body), frozenset({202, 400}))
    dispositions = {
        "missing": None, "not-form-data": b"attachment; name=\"file\"", "no-name": b"form-data",
        "unquoted-name": b"form-data; name=file; filename=f", "nul-name": b"form-data; name=\"fi\0le\"",
        "invalid-utf8-name": b"form-data; name=\"\xff\"", "empty-name": b"form-data; name=\"\"",
        "unterminated-quote": b"form-data; name=\"file",
        "long-name": b"form-data; name=\"" + b"f" * 50_000 + b"\"",
        "many-params": b"form-data; name=\"file\"" + b"; p=v" * 5000,
    }
    for label, disposition in dispositions.items():
        if disposition is None:
            raw = b"--" + B + b"\r\nContent-Type: " + CT_OK + b"\r\n\r\ndata\r\n" + END
        else:
            raw = part(disposition=disposition) + END
        yield Case(f"mp-disposition-{label}", request(raw), frozenset({202, 400}))
    yield Case("mp-boundary-inside-data", request(part(data=b"--" + B + b"x" * 10) + END),
               frozenset({202, 400}))
    yield Case("mp-closing-boundary-inside-data",
               request(part(data=b"\r\n--" + B + b"--junk") + END), frozenset({202, 400}))
    yield Case("mp-binary-garbage", request(bytes(range(256)) * 100), bad)


def content_type_cases() -> Iterator[Case]:
    for label, ctype in {
        "missing": None, "text-plain": b"text/plain", "json": b"application/json",
        "urlencoded": b"application/x-www-form-urlencoded", "multipart-mixed":
        b"multipart/mixed; boundary=" + B, "no-boundary": b"multipart/form-data",
        "empty-boundary": b"multipart/form-data; boundary=", "long-boundary":
        b"multipart/form-data; boundary=" + b"b" * 300, "quoted-unterminated":
        b"multipart/form-data; boundary=\"" + B, "boundary-twice":
        b"multipart/form-data; boundary=x; boundary=" + B, "garbage-params":
        b"multipart/form-data; ;;; =; boundary", "invalid-bytes": b"multipart/form-data; boundary=\xff\xfe",
        "uppercase": b"MULTIPART/FORM-DATA; BOUNDARY=" + B, "semicolon-only": b";",
        "spaces": b"multipart/form-data ; boundary = " + B, "charset-junk":
        b"multipart/form-data; charset=\xff; boundary=" + B,
    }.items():
        yield Case(f"ct-{label}", request(GOOD, content_type=ctype), frozenset({202, 400, 415}))


def header_cases() -> Iterator[Case]:
    close = frozenset({400, 413, 431})
    yield Case("hdr-one-100k-header", request(GOOD, headers=[b"X-Big: " + b"a" * 100_000]),
               close, may_close=True)
    yield Case("hdr-3000-headers", request(GOOD, headers=[b"X-%d: v" % i for i in range(3000)]),
               close | {202}, may_close=True)
    yield Case("hdr-without-colon", request(GOOD, headers=[b"NoColonHere"]), close, may_close=True)
    yield Case("hdr-nul-in-value", request(GOOD, headers=[b"X-N: a\0b"]), close | {202}, may_close=True)
    yield Case("hdr-high-bytes", request(GOOD, headers=[b"X-H: \xff\xfe\x80"]), close | {202})
    yield Case("hdr-space-before-colon", request(GOOD, headers=[b"X-S : v"]), close | {202},
               may_close=True)
    yield Case("hdr-obs-fold", request(GOOD, headers=[b"X-F: a", b" b"]), close | {202}, may_close=True)
    for label, length in {"negative": b"-1", "text": b"ten", "huge": b"99999999999999999999",
                          "plus": b"+5", "hex": b"0x10", "spaces": b" 5 5"}.items():
        yield Case(f"hdr-content-length-{label}", request(GOOD, length=length),
                   close, may_close=True, half_close=True)
    yield Case("hdr-content-length-twice-different",
               request(GOOD, headers=[b"Content-Length: 3"]), close, may_close=True)
    yield Case("hdr-content-length-over-limit", request(b"", length=b"200000000000"),
               frozenset({413}), may_close=True, half_close=True)
    yield Case("hdr-content-length-longer-than-body", request(GOOD, length=str(len(GOOD) + 500).encode()),
               frozenset({400}), may_close=True, half_close=True)
    chunked_ok = b"%x\r\n" % len(GOOD) + GOOD + b"\r\n0\r\n\r\n"
    head = (b"POST /api/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="
            + B + b"\r\nTransfer-Encoding: chunked\r\n")
    yield Case("te-chunked-valid", head + b"\r\n" + chunked_ok, frozenset({202}))
    yield Case("te-chunked-bad-hex", head + b"\r\nzz\r\nabc\r\n0\r\n\r\n", close, may_close=True)
    yield Case("te-chunked-size-overflow", head + b"\r\nffffffffffffffffff\r\nab\r\n",
               close, may_close=True, half_close=True)
    yield Case("te-chunked-truncated", head + b"\r\n" + chunked_ok[:50], close, may_close=True,
               half_close=True)
    yield Case("te-chunked-and-content-length", head + b"Content-Length: 5\r\n\r\n" + chunked_ok,
               close, may_close=True)
    yield Case("te-unknown", head.replace(b"chunked", b"gzip, chunked, x") + b"\r\n" + chunked_ok,
               close | {202}, may_close=True)


def request_line_cases() -> Iterator[Case]:
    def raw(line: bytes) -> bytes:
        return line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    for label, line in {
        "bad-method": b"BREW /api/v1/upload HTTP/1.1", "http09": b"GET /api/v1/version",
        "http2": b"GET /api/v1/version HTTP/2.0", "no-version": b"POST /api/v1/upload",
        "long-uri": b"GET /api/v1/" + b"a" * 100_000 + b" HTTP/1.1",
        "traversal": b"GET /api/v1/../../etc/passwd HTTP/1.1",
        "encoded-traversal": b"GET /api/v1/uploads/..%2F..%2Fetc%2Fpasswd HTTP/1.1",
        "invalid-utf8-path": b"GET /api/v1/uploads/\xff\xfe HTTP/1.1",
        "nul-path": b"GET /api/v1/uploads/a\0b HTTP/1.1", "star": b"OPTIONS * HTTP/1.1",
        "absolute-uri": b"GET http://evil.example/api/v1/version HTTP/1.1",
        "lowercase-method": b"post /api/v1/upload HTTP/1.1", "put-upload": b"PUT /api/v1/upload HTTP/1.1",
        "delete-upload": b"DELETE /api/v1/uploads/x HTTP/1.1", "tabs": b"GET\t/api/v1/version\tHTTP/1.1",
        "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    }.items():
        yield Case(f"line-{label}", raw(line), frozenset({200, 400, 404, 405, 414, 415, 431}),
                   may_close=True)


def identity_cases() -> Iterator[Case]:
    ids = {
        "not-base64": b"!!!not base64!!!", "base64-not-json": base64.b64encode(b"hello"),
        "json-array": b64([1, 2]), "json-string": b64("x"), "json-null": b64(None),
        "no-identity": b64({"x": 1}), "identity-string": b64({"identity": "x"}),
        "empty-identity": b64({"identity": {}}),
        "account-object": b64({"identity": {"account_number": {"a": 1}}}),
        "org-list": b64({"identity": {"org_id": [1]}}), "org-bool": b64({"identity": {"org_id": True}}),
        "org-float": b64({"identity": {"org_id": 1.5}}), "org-long": b64({"identity": {"org_id": "o" * 65}}),
        "org-control": b64({"identity": {"org_id": "a\nb"}}), "org-empty": b64({"identity": {"org_id": ""}}),
        "internal-not-dict": b64({"identity": {"internal": "x", "account_number": "1"}}),
        "internal-org-list": b64({"identity": {"internal": {"org_id": []}}}),
        "user-not-dict": b64({"identity": {"org_id": "o", "user": "u"}}),
        "username-object": b64({"identity": {"org_id": "o", "user": {"username": {"a": 1}}}}),
        "huge": b64({"identity": {"org_id": "o", "pad": "p" * 20_000}}),
        "deep": base64.b64encode(b"[" * 11_000 + b"]" * 11_000),
        "deep-identity": base64.b64encode(b"{\"identity\":" + b"[" * 5000 + b"]" * 5000 + b"}"),
        "invalid-utf8-json": base64.b64encode(b"{\"identity\": {\"org_id\": \"\xff\"}}"),
        "urlsafe": base64.urlsafe_b64encode(b"\xfb\xff" + json.dumps({"identity": {}}).encode()),
        "no-padding": b64({"identity": {"org_id": "o1"}}).rstrip(b"="),
        "whitespace-inside": (b64({"identity": {"org_id": "o1"}})[:8] + b" "
                              + b64({"identity": {"org_id": "o1"}})[8:]),
        "empty": b"", "nan": base64.b64encode(b"{\"identity\": {\"org_id\": NaN}}"),
        "huge-int": base64.b64encode(b"{\"identity\": {\"org_id\": " + b"9" * 5000 + b"}}"),
        "lone-surrogate": base64.b64encode(b"{\"identity\": {\"org_id\": \"\\udc00\"}}"),
    }
    for label, value in ids.items():
        yield Case(f"id-malformed-{label}", request(GOOD, headers=[b"x-rh-identity: " + value]),
                   frozenset({400, 202}))
    forged = {
        "other-org": b64({"identity": {"org_id": "victim-org", "account_number": "999"}}),
        "int-org": b64({"identity": {"org_id": 12345}}),
        "internal-org": b64({"identity": {"internal": {"org_id": "o2"}}}),
        "type-system": b64({"identity": {"org_id": "o3", "type": "System", "system": {"cn": "x"}}}),
        "extra-fields": b64({"identity": {"org_id": "o4", "entitlements": {"x": {"is_entitled": True}}}}),
    }
    for label, value in forged.items():
        yield Case(f"id-forged-{label}", request(GOOD, headers=[b"x-rh-identity: " + value]),
                   frozenset({202}), tags=("accepted-ok",))
    for label, value in {"long": b"r" * 100, "traversal": b"../../x", "spaces": b"a b",
                         "unicode": "r\u00e9q".encode(), "empty": b"", "semicolon": b"a;b"}.items():
        yield Case(f"reqid-{label}", request(GOOD, headers=[b"x-rh-insights-request-id: " + value]),
                   frozenset({202}), tags=("accepted-ok",))


def download_cases() -> Iterator[Case]:
    def get(path: bytes) -> bytes:
        return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    refused = frozenset({403, 404})
    for label, path in {
        "no-signature": b"/api/v1/download/quarantine/abc",
        "bad-signature": b"/api/v1/download/quarantine/abc?expires=99999999999&signature=00",
        "expired": b"/api/v1/download/quarantine/abc?expires=1&signature=" + b"0" * 64,
        "negative-expiry": b"/api/v1/download/quarantine/abc?expires=-5&signature=x",
        "huge-expiry": b"/api/v1/download/quarantine/abc?expires=" + b"9" * 400 + b"&signature=x",
        "text-expiry": b"/api/v1/download/quarantine/abc?expires=soon&signature=x",
        "unknown-bucket": b"/api/v1/download/secrets/abc?expires=99999999999&signature=x",
        "traversal-key": b"/api/v1/download/quarantine/../../gateway.sqlite?expires=99999999999&signature=x",
        "dotdot-key": b"/api/v1/download/quarantine/..?expires=99999999999&signature=x",
        "incomplete-dir": b"/api/v1/download/quarantine/.incomplete/x?expires=99999999999&signature=x",
        "signing-key": b"/api/v1/download/quarantine/../url-signing.key?expires=99999999999&signature=x",
        "encoded-traversal": b"/api/v1/download/quarantine/%2e%2e%2fgateway.sqlite?expires=9&signature=x",
        "double-signature": b"/api/v1/download/quarantine/abc?signature=a&signature=b&expires=1",
        "status-unknown": b"/api/v1/uploads/nope", "status-long": b"/api/v1/uploads/" + b"x" * 200,
        "status-bad-chars": b"/api/v1/uploads/%00%ff",
    }.items():
        yield Case(f"dl-{label}", get(path), refused | {400})


def cases() -> Iterator[Case]:
    for group in (multipart_cases, content_type_cases, header_cases, request_line_cases,
                  identity_cases, download_cases):
        yield from group()
