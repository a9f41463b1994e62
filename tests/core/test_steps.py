"""Processing steps on real files: gunzip, untar, decrypt, and their limits."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from core.steps import RATIO_FLOOR, STEPS, Decryptor, Limits, StepError, prepare
from tests.fixtures.gpg import PASSPHRASE, Keyring

LIMITS = Limits(max_bytes=8 * 1024 * 1024, max_ratio=50, max_members=5)
ALL = frozenset(STEPS)


def make_tar(path: Path, members: dict[str, bytes], compress: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def run(source: Path, name: str, tmp_path: Path, steps: frozenset[str] = ALL, limits: Limits = LIMITS,
        decryptor: Decryptor | None = None) -> dict[str, bytes]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return {item.name: item.path.read_bytes()  # type: ignore[union-attr]
            for item in prepare(source, name, steps, work, limits, decryptor)}


def failure(*args: object, **kwargs: object) -> StepError:
    with pytest.raises(StepError) as caught:
        run(*args, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_plain_file_is_itself(tmp_path: Path) -> None:
    source = tmp_path / "x.obj"
    source.write_bytes(b"v 1 2 3\n")
    assert run(source, "lab/x.obj", tmp_path) == {"lab/x.obj": b"v 1 2 3\n"}


def test_gunzip_multi_member(tmp_path: Path) -> None:
    source = tmp_path / "x.obj.gz"
    source.write_bytes(gzip.compress(b"v 1 2 3\n") + gzip.compress(b"f 1 1 1\n"))
    assert run(source, "x.obj.gz", tmp_path) == {"x.obj": b"v 1 2 3\nf 1 1 1\n"}


def test_steps_only_when_asked(tmp_path: Path) -> None:
    source = tmp_path / "x.obj.gz"
    source.write_bytes(gzip.compress(b"data"))
    assert run(source, "x.obj.gz", tmp_path, steps=frozenset()) == {"x.obj.gz": source.read_bytes()}


@pytest.mark.parametrize("content", [b"not gzip at all", gzip.compress(os.urandom(5000))[:-20]])
def test_bad_or_truncated_gzip(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "x.gz"
    source.write_bytes(content)
    assert failure(source, "x.gz", tmp_path).code == "bad_archive"


def test_gzip_bomb_stops_at_the_ratio(tmp_path: Path) -> None:
    source = tmp_path / "bomb.gz"
    source.write_bytes(gzip.compress(bytes(4 * 1024 * 1024)))
    assert source.stat().st_size * LIMITS.max_ratio + RATIO_FLOOR < 4 * 1024 * 1024
    assert failure(source, "bomb.gz", tmp_path).code == "archive_bomb"


def test_gzip_larger_than_max_bytes(tmp_path: Path) -> None:
    source = tmp_path / "big.gz"
    source.write_bytes(gzip.compress(os.urandom(300_000)))
    small = Limits(max_bytes=200_000)
    assert failure(source, "big.gz", tmp_path, limits=small).code == "too_large"


def test_untar_members_become_payloads(tmp_path: Path) -> None:
    source = make_tar(tmp_path / "a.tar.gz", {"one.obj": b"1", "dir/two.obj": b"2",
                                              "._junk": b"mac", "dir/.hidden": b"h"})
    assert run(source, "lab/a.tar.gz", tmp_path) == {"lab/a/one.obj": b"1", "lab/a/dir/two.obj": b"2"}


def test_plain_tar_and_tgz(tmp_path: Path) -> None:
    plain = make_tar(tmp_path / "p.tar", {"m": b"x"}, compress=False)
    assert run(plain, "p.tar", tmp_path) == {"p/m": b"x"}
    tgz = make_tar(tmp_path / "p.tgz", {"m": b"y"})
    assert run(tgz, "p.tgz", tmp_path) == {"p/m": b"y"}


@pytest.mark.parametrize("case", ["garbage", "truncated", "escape", "empty", "members"])
def test_bad_archives(tmp_path: Path, case: str) -> None:
    source = tmp_path / "a.tar.gz"
    if case == "garbage":
        source.write_bytes(b"this is no archive" * 100)
    elif case == "truncated":
        make_tar(source, {"m": os.urandom(100_000)})
        source.write_bytes(source.read_bytes()[:50_000])
    elif case == "escape":
        make_tar(source, {"../../etc/evil": b"x"})
    elif case == "empty":
        make_tar(source, {})
    else:
        make_tar(source, {f"m{i}": b"x" for i in range(LIMITS.max_members + 1)})
    expected = {"empty": "empty_archive", "members": "archive_bomb"}.get(case, "bad_archive")
    assert failure(source, "a.tar.gz", tmp_path).code == expected


def test_tar_bomb_stops_at_the_ratio(tmp_path: Path) -> None:
    source = make_tar(tmp_path / "a.tgz", {"zeros": bytes(4 * 1024 * 1024)})
    assert failure(source, "a.tgz", tmp_path).code == "archive_bomb"


def test_decrypt_then_gunzip(tmp_path: Path, keyring: Keyring) -> None:
    source = tmp_path / "x.obj.gz.gpg"
    keyring.encrypt(gzip.compress(b"secret mesh"), source)
    decryptor = Decryptor(keyring.home, PASSPHRASE)
    assert run(source, "x.obj.gz.gpg", tmp_path, decryptor=decryptor) == {"x.obj": b"secret mesh"}


def test_decrypt_with_the_wrong_key(tmp_path: Path, keyring: Keyring,
                                    other_keyring: Keyring) -> None:
    source = tmp_path / "x.gpg"
    other_keyring.encrypt(b"not for us", source)
    error = failure(source, "x.gpg", tmp_path, decryptor=Decryptor(keyring.home, PASSPHRASE))
    assert error.code == "decrypt_failed" and "secret key" in error.message


def test_decrypt_garbage_and_no_keyring(tmp_path: Path, keyring: Keyring) -> None:
    source = tmp_path / "x.gpg"
    source.write_bytes(b"junk" * 100)
    assert failure(source, "x.gpg", tmp_path,
                   decryptor=Decryptor(keyring.home, PASSPHRASE)).code == "decrypt_failed"
    assert failure(source, "x.gpg", tmp_path).code == "decrypt_failed"


def test_decrypt_bounded_by_max_bytes(tmp_path: Path, keyring: Keyring) -> None:
    source = tmp_path / "x.gpg"
    keyring.encrypt(os.urandom(300_000), source)
    error = failure(source, "x.gpg", tmp_path, limits=Limits(max_bytes=100_000),
                    decryptor=Decryptor(keyring.home, PASSPHRASE))
    assert error.code == "too_large"
