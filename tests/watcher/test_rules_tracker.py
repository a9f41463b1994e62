"""Rules, ignored names, settings, and the completion tracker with a fake clock."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings, SettingsError
from watcher.config import preflight
from watcher.rules import DEFAULT_RULES, RuleError, is_ignored, match, parse_rules
from watcher.tracker import Tracker, open_for_writing

SERVICES = ("advisor", "testareno", "assets")


def test_default_rules_send_obj_to_assets_gzip() -> None:
    rules = parse_rules(DEFAULT_RULES, SERVICES)
    rule = match(rules, "lab1/Case1_Step1.OBJ")
    assert rule and (rule.service, rule.category, rule.compress) == ("assets", "obj", True)
    assert rule.content_type == "application/vnd.redhat.assets.obj"
    gz = match(rules, "x.obj.gz")
    assert gz and gz.steps == {"gunzip"}
    assert match(rules, "notes.txt") is None


def test_directory_rules_first_match_wins() -> None:
    rules = parse_rules("lab2/=advisor/lab:untar, *.obj=assets/obj", SERVICES)
    assert match(rules, "lab2/deep/x.obj").service == "advisor"  # type: ignore[union-attr]
    assert match(rules, "lab3/x.obj").service == "assets"  # type: ignore[union-attr]
    assert match(rules, "lab2x/y") is None


@pytest.mark.parametrize("text, fragment", [
    ("*.obj", "cannot parse"), ("*.obj=nope/obj", "VALID_UPLOAD_TYPES"),
    ("*.obj=assets/obj:zip", "unknown option"), (" , ", "no rule"),
])
def test_bad_rules(text: str, fragment: str) -> None:
    with pytest.raises(RuleError, match=fragment):
        parse_rules(text, SERVICES)


def test_the_watcher_checks_its_rules_and_its_directory(tmp_path: Path) -> None:
    env = {"WORKDIR": str(tmp_path), "WATCH_RULES": "*.x=nope/y"}
    assert Settings.from_env(env).watch_rules == "*.x=nope/y"
    (tmp_path / "d").mkdir()
    with pytest.raises(SettingsError, match="WATCH_RULES"):
        preflight(Settings.from_env({**env, "WATCH_DIR": str(tmp_path / "d")}))
    with pytest.raises(SettingsError, match="WATCH_DIR .* does not exist"):
        preflight(Settings.from_env({"WORKDIR": str(tmp_path), "WATCH_DIR": str(tmp_path / "e")}))
    assert not (tmp_path / "e").exists()
    with pytest.raises(SettingsError, match="WATCH_QUIET_SECONDS"):
        Settings.from_env({"WORKDIR": str(tmp_path), "WATCH_QUIET_SECONDS": "soon"})
    settings = Settings.from_env({"WORKDIR": str(tmp_path), "GPG_PASSPHRASE": "pw"})
    assert "pw" not in repr(settings) and settings.watch_quiet_seconds == 2.0


@pytest.mark.parametrize("name", [".x.obj", "a/.cache/x.obj", "x.obj.part", "x.obj~",
                                  "x.obj.tmp", "~$x.obj", "x.crdownload"])
def test_ignored(name: str) -> None:
    assert is_ignored(name)


def test_not_ignored() -> None:
    assert not is_ignored("lab/x.obj") and not is_ignored("x.partner.obj")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_waits_for_a_quiet_period() -> None:
    clock = Clock()
    tracker = Tracker(2.0, clock)
    assert tracker.next_due() is None
    assert tracker.observe("/d/a", (10, 1))
    clock.now += 1.5
    assert not tracker.observe("/d/a", (20, 2))  # still growing: restarts the quiet period
    clock.now += 1.9
    assert tracker.due() == [] and tracker.next_due() == pytest.approx(0.1)
    clock.now += 0.1
    assert tracker.due() == ["/d/a"]
    assert tracker.settle("/d/a", (20, 2))


def test_tracker_restat_catches_silent_changes_and_vanished_files() -> None:
    clock = Clock()
    tracker = Tracker(1.0, clock)
    tracker.observe("/d/a", (1, 1))
    tracker.observe("/d/b", (1, 1))
    clock.now += 1
    assert not tracker.settle("/d/a", (5, 2))  # changed without an event (network share)
    assert not tracker.settle("/d/b", None)
    assert "/d/b" not in tracker and tracker.due() == []
    clock.now += 1
    assert tracker.due() == ["/d/a"]


def test_tracker_retry_delay() -> None:
    clock = Clock()
    tracker = Tracker(1.0, clock)
    tracker.observe("/d/a", (1, 1))
    tracker.touch("/d/a", delay=8.0)
    clock.now += 2
    assert tracker.due() == [] and tracker.next_due() == pytest.approx(6.0)
    clock.now += 6
    assert tracker.due() == ["/d/a"]


def test_open_for_writing_sees_our_own_writer(tmp_path: Path) -> None:
    path = tmp_path / "x.obj"
    reader_path = tmp_path / "y.obj"
    reader_path.write_bytes(b"y")
    with open(path, "wb"), open(reader_path, "rb"):
        assert open_for_writing(str(tmp_path)) == {str(path)}
    assert open_for_writing(str(tmp_path)) == set()
    assert open_for_writing(str(tmp_path), proc=str(tmp_path / "no-proc")) == set()
