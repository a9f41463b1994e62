"""core/midstate.py: the resumable sha256/sha1 give hashlib's digests however the bytes
are split and saved, and their saved states are rehashes' (both ways), so states saved
before it, or by a gateway without libcrypto, continue."""
from __future__ import annotations

import hashlib
import os
import random

import pytest
import rehashes

from core import midstate

REHASHES = {"sha256": rehashes.PySha256, "sha1": rehashes.PySha1}


def test_openssl_hashers_are_used_here() -> None:
    assert midstate.AVAILABLE  # else the fallback is measured and tested, not the fast path
    assert isinstance(midstate.new("sha256"), midstate.OpenSSLHasher)


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_saved_and_continued_at_any_split_gives_hashlibs_digest(algorithm: str) -> None:
    rng = random.Random(15)
    data = os.urandom(300_000)
    for _ in range(40):
        cuts = sorted(rng.sample(range(len(data)), rng.randint(1, 6))) + [len(data)]
        hasher, start = midstate.new(algorithm), 0
        for cut in cuts:
            hasher.update(data[start:cut])
            start = cut
            state = hasher.serialize()
            hasher = midstate.load(algorithm, state)  # a checkpoint and a restart
        assert hasher.finalize() == hashlib.new(algorithm, data).hexdigest()
    # finalize leaves the hasher going; empty and short inputs
    hasher = midstate.new(algorithm)
    assert hasher.finalize() == hashlib.new(algorithm).hexdigest()
    hasher.update(b"abc")
    assert hasher.finalize() == hashlib.new(algorithm, b"abc").hexdigest()
    hasher.update(b"def")
    assert hasher.finalize() == hashlib.new(algorithm, b"abcdef").hexdigest()


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 127, 128, 1000, 5_000_000])
def test_states_are_rehashes_both_ways(algorithm: str, size: int) -> None:
    data, tail = os.urandom(size), os.urandom(100)
    ours, theirs = midstate.new(algorithm), REHASHES[algorithm]()
    ours.update(data)
    theirs.update(data)
    assert ours.serialize() == theirs.serialize()
    from_theirs = midstate.load(algorithm, theirs.serialize())
    from_ours = REHASHES[algorithm].deserialize(ours.serialize())
    from_theirs.update(tail)
    from_ours.update(tail)
    expected = hashlib.new(algorithm, data + tail).hexdigest()
    assert from_theirs.finalize() == from_ours.finalize() == expected


def test_a_corrupt_state_is_refused() -> None:
    state = bytearray(midstate.new("sha256").serialize())
    state[40] = 64  # 64 bytes buffered: rehashes would have hashed them
    with pytest.raises(ValueError):
        midstate.load("sha256", bytes(state))
    with pytest.raises(Exception):  # noqa: B017 - struct.error, whatever the length
        midstate.load("sha256", bytes(state[:50]))


def test_an_upload_checkpointed_with_rehashes_finishes_with_the_right_digests() -> None:
    """A tus upload whose hash state a gateway before core/midstate.py (or one falling
    back to rehashes) saved is continued and finished here, and the other way round."""
    from core.resumable import HashState

    first, second = os.urandom(70_001), os.urandom(5_003)
    old = HashState(None, sha1=True)
    old.sha256, old.sha1 = rehashes.PySha256(), rehashes.PySha1()
    old.update(first)
    resumed = HashState(old.dump(), sha1=True)
    assert isinstance(resumed.sha256, midstate.OpenSSLHasher)
    resumed.update(second)
    expected = {"sha256": hashlib.sha256(first + second).hexdigest(),
                "sha1": hashlib.sha1(first + second).hexdigest()}
    assert resumed.digests() == expected
    back = HashState(None, sha1=True)
    back.update(first)
    state = back.dump()
    sizes = (int.from_bytes(state[:2], "big"), int.from_bytes(state[2:4], "big"))
    with_rehashes = (rehashes.PySha256.deserialize(state[4:4 + sizes[0]]),
                     rehashes.PySha1.deserialize(state[4 + sizes[0]:]))
    for hasher in with_rehashes:
        hasher.update(second)
    assert (with_rehashes[0].finalize(), with_rehashes[1].finalize()) == \
        (expected["sha256"], expected["sha1"])
