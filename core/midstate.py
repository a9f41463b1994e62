"""sha256 and sha1 whose running state can be saved and continued later, hashed by
OpenSSL without the GIL.

A resumable upload hashes its payload as the bytes arrive, in a pool thread, while the
event loop reads the next bytes from the socket. ``rehashes`` (RustCrypto, serialisable)
holds the GIL while it hashes, about 0.9 s per GiB here, so the event loop stops reading
for all that time: bench/tus_upload.py measured tus at 0.69-0.76 × multipart (whose
hashlib lets the loop run), and at 0.88 × with a hasher that lets it run. hashlib cannot
export its state, so this module calls OpenSSL's own ``SHA256_Update`` / ``SHA1_Update``
(the library hashlib uses, same assembly) through ctypes, which releases the GIL for the
call, on a ``SHA256_CTX`` / ``SHA_CTX`` it owns.

The saved state is byte for byte ``rehashes``' own (``serialize``/``deserialize``: the
chaining words, the count of whole 64-byte blocks, the buffered bytes), so states saved
before this module, or by a gateway that falls back to ``rehashes``, continue here and
the other way round. When libcrypto or its low-level functions cannot be loaded, or the
self-check at import finds a context layout other than the one below, ``new``/``load``
return ``rehashes`` hashers (correct, slower). tests/core/test_midstate.py checks the
digests against hashlib and the states against ``rehashes`` both ways.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import struct
from typing import Any, Protocol

import rehashes


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...
    def serialize(self) -> bytes: ...
    def finalize(self) -> str: ...


# name: (Init, Update, Final, words of state, digest bytes, rehashes class)
_ALGORITHMS: dict[str, tuple[str, str, str, int, int, Any]] = {
    "sha256": ("SHA256_Init", "SHA256_Update", "SHA256_Final", 8, 32, rehashes.PySha256),
    "sha1": ("SHA1_Init", "SHA1_Update", "SHA1_Final", 5, 20, rehashes.PySha1),
}
_CTX_BYTES = 256  # room for either context (112 and 96 bytes) and then some
_BUFFERED = 63  # rehashes keeps up to 63 bytes not yet hashed (a full block is hashed)


def _context_format(words: int, algorithm: str) -> str:
    """OpenSSL's context (sha.h): ``SHA_LONG h[words], Nl, Nh, data[16]; unsigned num``
    (and ``md_len`` for sha256), in native byte order."""
    return f"={words}III64sI" + ("I" if algorithm == "sha256" else "")


def _state_format(words: int) -> str:
    """rehashes' state: chaining words (little endian), whole blocks (u64), how many
    bytes are buffered (u8), the buffer (63 bytes)."""
    return f"<{words}IQB{_BUFFERED}s"


class OpenSSLHasher:
    """One running sha256 or sha1 on OpenSSL's low-level API."""

    def __init__(self, algorithm: str, context: ctypes.Array[ctypes.c_char] | None = None
                 ) -> None:
        self.algorithm = algorithm
        init, _, _, self._words, self._digest_size, _ = _ALGORITHMS[algorithm]
        self._update, self._final = _FUNCS[algorithm][1:]
        if context is None:
            context = ctypes.create_string_buffer(_CTX_BYTES)
            if _FUNCS[algorithm][0](context) != 1:
                raise RuntimeError(f"{init} failed")
        self._ctx = context

    def update(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)
        if data and self._update(self._ctx, data, len(data)) != 1:  # without the GIL
            raise RuntimeError(f"{self.algorithm} update failed")

    def serialize(self) -> bytes:
        fields = struct.unpack_from(_context_format(self._words, self.algorithm), self._ctx.raw)
        words = fields[:self._words]
        low, high, data, num = fields[self._words:self._words + 4]
        hashed = ((high << 32) | low) // 8 - num
        return struct.pack(_state_format(self._words), *words, hashed // 64, num,
                           data[:num])

    @classmethod
    def deserialize(cls, algorithm: str, state: bytes) -> OpenSSLHasher:
        words_count = _ALGORITHMS[algorithm][3]
        fields = struct.unpack(_state_format(words_count), state)
        words, blocks, num, buffered = (fields[:words_count], *fields[words_count:])
        if num > _BUFFERED:
            raise ValueError(f"{algorithm} state buffers {num} bytes")
        bits = (blocks * 64 + num) * 8
        values = [*words, bits & 0xFFFFFFFF, bits >> 32, buffered[:num].ljust(64, b"\0"), num]
        if algorithm == "sha256":
            values.append(_ALGORITHMS[algorithm][4])  # md_len
        context = ctypes.create_string_buffer(_CTX_BYTES)
        struct.pack_into(_context_format(words_count, algorithm), context, 0, *values)
        return cls(algorithm, context)

    def finalize(self) -> str:
        """The hex digest of what was hashed so far (this hasher can go on)."""
        context = ctypes.create_string_buffer(self._ctx.raw, _CTX_BYTES)
        digest = ctypes.create_string_buffer(self._digest_size)
        if self._final(digest, context) != 1:
            raise RuntimeError(f"{self.algorithm} final failed")
        return digest.raw.hex()


def _load() -> dict[str, tuple[Any, Any, Any]]:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return {}
    try:
        lib = ctypes.CDLL(name)  # CDLL (not PyDLL): calls release the GIL
        funcs = {}
        for algorithm, (init, update, final, *_rest) in _ALGORITHMS.items():
            f_init, f_update, f_final = getattr(lib, init), getattr(lib, update), getattr(lib, final)
            f_init.argtypes = [ctypes.c_void_p]
            f_update.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
            f_final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            for func in (f_init, f_update, f_final):
                func.restype = ctypes.c_int
            funcs[algorithm] = (f_init, f_update, f_final)
        return funcs
    except (OSError, AttributeError):
        return {}


def _self_check() -> bool:
    """The context layout assumed above is the library's: states and digests match
    rehashes' and hashlib's on a prefix that leaves bytes buffered."""
    sample = bytes(range(256)) * 3 + b"tail"
    for algorithm, (*_funcs, rehasher) in _ALGORITHMS.items():
        ours = OpenSSLHasher(algorithm)
        ours.update(sample[:200])
        theirs = rehasher()
        theirs.update(sample[:200])
        if ours.serialize() != theirs.serialize():
            return False
        resumed = OpenSSLHasher.deserialize(algorithm, theirs.serialize())
        resumed.update(sample[200:])
        if resumed.finalize() != hashlib.new(algorithm, sample).hexdigest():
            return False
    return True


_FUNCS = _load()
try:
    AVAILABLE = bool(_FUNCS) and _self_check()
except (RuntimeError, struct.error, ValueError):
    AVAILABLE = False


def new(algorithm: str) -> Hasher:
    """A new sha256 or sha1: OpenSSL's when it can be had, else rehashes'."""
    if AVAILABLE:
        return OpenSSLHasher(algorithm)
    return _ALGORITHMS[algorithm][5]()  # type: ignore[no-any-return]


def load(algorithm: str, state: bytes) -> Hasher:
    """Continue a state saved by ``serialize`` (of either kind of hasher)."""
    if AVAILABLE:
        return OpenSSLHasher.deserialize(algorithm, state)
    return _ALGORITHMS[algorithm][5].deserialize(state)  # type: ignore[no-any-return]
