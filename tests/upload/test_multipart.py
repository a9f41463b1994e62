"""MultipartStream on python-multipart: byte-by-byte feeding (every chunk edge inside the
boundary and the part headers), unknown parts, filename and content type, completion."""
import pytest

from tests.helpers import CT_TESTARENO, multipart
from upload.errors import ApiError
from upload.multipart import MultipartStream


def feed(body: bytes, ctype: str, piece: int) -> tuple[MultipartStream, bytes]:
    stream = MultipartStream({"Content-Type": ctype})
    data = b""
    for start in range(0, len(body), piece):
        stream.feed(body[start:start + piece])
        if stream.file is not None:
            data += b"".join(stream.file.take())
    return stream, data


@pytest.mark.parametrize("piece", [1, 3, 64, 1 << 20])
def test_parts_fed_in_pieces(piece: int) -> None:
    payload = b"\r\n--" + bytes(range(256)) * 5 + b"\r\n"
    body, ctype = multipart(payload, filename="dir\\a b.tgz", metadata={"k": "v"},
                            extra_parts=[("other", b"ignored")])
    stream, data = feed(body, ctype, piece)
    assert data == payload and stream.complete
    part = stream.file
    assert part is not None and part.finished and part.name == "file"
    assert part.multipart_filename == "dir\\a b.tgz"
    assert part.multipart_content_type == CT_TESTARENO
    assert stream.metadata_bytes() == b'{"k": "v"}'


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "one-byte"])
def test_tiny_file_parts(payload: bytes) -> None:
    body, ctype = multipart(payload)
    stream, data = feed(body, ctype, 1)
    assert data == payload and stream.file is not None and stream.file.finished


def test_truncated_body_is_not_complete() -> None:
    body, ctype = multipart(b"abc")
    stream, _ = feed(body[:-10], ctype, 7)
    assert not stream.complete and stream.file is not None and not stream.file.finished


def test_garbage_is_malformed() -> None:
    stream = MultipartStream({"Content-Type": "multipart/form-data; boundary=xyz"})
    with pytest.raises(ApiError) as info:
        stream.feed(b"this is not multipart at all\r\n\r\n")
    assert info.value.code == "malformed_multipart"
