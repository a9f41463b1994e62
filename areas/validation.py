"""Validating an area's files as a set with a command validator (``VALIDATOR_COMMAND_<NAME>``,
validators/config.py; its time limit ``VALIDATOR_TIMEOUT_<NAME>``), like the HCA upload
service's validator images over paired sequence files.

The job (``platform.upload.area-work``, type ``validate``) copies each file, at the
version the validation was asked for, into a private temporary directory under its own
name (``run1/R1.fastq`` → ``<tmp>/files/run1/R1.fastq``), then runs
``command… <path> <path>…`` with the paths in the order given, in that directory, with
stdin closed and a clean environment (``PATH``, ``LANG``, ``HOME``, ``TMPDIR``,
``AREA_ID``, ``AREA_FILES``: the names as a JSON list, ``AREA_VALIDATION_ID``). Exit 0 →
``valid``, else ``invalid``; killed by its time limit → ``invalid``, reason ``timed_out``.
Validations run on a pool of ``VALIDATION_WORKERS`` threads beside the consumer, which
hands each job over and goes on, so a long one never holds up the bus (Kafka's
``max.poll.interval.ms``). The database row is the durable state: a worker claims it
(``scheduled`` → ``validating``: a job delivered twice runs once) and keeps a heartbeat on
it; a sweeper schedules again (with a new job) a validation whose worker went silent, or
that stayed ``scheduled``, for ``STALLED`` seconds (a process that died). Recorded:
exit code, the last 2 KiB of stdout and of stderr, duration, state; announced on
``platform.upload.area-events`` (``validated`` / ``validation_failed``). A file replaced
meanwhile makes the validation ``stale`` (its files are ``unvalidated`` again anyway).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from areas import sets
from core.services import Services
from core.settings import Settings
from validators.command import DEFAULT_PATH, CommandCheck, _tail
from validators.config import validator_config

logger = logging.getLogger(__name__)


# A running validation touches its row this often; one silent for STALLED seconds lost its
# worker and is run again (areas/worker.py's sweeper).
HEARTBEAT = 30.0
STALLED = 600.0


def commands(services: Services) -> dict[str, CommandCheck]:
    """The command validators configured, by name."""
    config = validator_config(services.settings)
    return {name: CommandCheck(argv, config.timeouts.get(name, 300.0))
            for name, argv in config.commands.items()}


def preflight(settings: Settings, installed: bool) -> None:
    """Start-up check of the command validators' variables (``SettingsError``); with
    ``installed`` (where validations run) also that each command exists
    (``FileNotFoundError``)."""
    config = validator_config(settings)
    if installed:
        for argv in config.commands.values():
            CommandCheck(argv).verify()


class SetValidator:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.commands = commands(services)

    def __call__(self, area_id: str, validation_id: str) -> None:
        """Run the validation if it is ``scheduled`` (claimed: ``validating``), with a
        heartbeat every ``HEARTBEAT`` seconds until it is recorded."""
        database = self.services.database
        row = sets.get_validation(database, validation_id)
        if row is None or not sets.claim_validation(database, validation_id):
            return
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(validation_id, stop),
                                name="area-validation-heartbeat", daemon=True)
        beat.start()
        try:
            self._validate(area_id, validation_id, row)
        finally:
            stop.set()
            beat.join(10)

    def _heartbeat(self, validation_id: str, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT):
            try:
                sets.touch_validation(self.services.database, validation_id)
            except Exception:  # noqa: BLE001 - the next beat tries again
                logger.warning("validation %s: heartbeat failed", validation_id)

    def _validate(self, area_id: str, validation_id: str, row: dict[str, Any]) -> None:
        database = self.services.database
        files = [(name, version) for name, version in json.loads(row["files"])]
        keys = sets.current_versions(database, area_id, files)
        check = self.commands.get(row["validator"])
        if keys is None or check is None:
            reason = "a file changed" if keys is None else "no such validator here"
            sets.finish_validation(database, validation_id, "stale" if keys is None
                                   else "invalid", {"reason": reason})
            return
        with tempfile.TemporaryDirectory(prefix="area-validation-") as tmp:
            paths = self._fetch(Path(tmp), keys)
            if paths is None:  # a file is gone: replaced or deleted meanwhile
                sets.finish_validation(database, validation_id, "stale",
                                       {"reason": "a file is gone"})
                return
            state, result = self._run(check, Path(tmp), paths, area_id, validation_id,
                                      [name for name, _ in files])
        sets.finish_validation(database, validation_id, state, result)
        logger.info("area %s: validation %s (%s) %s", area_id, validation_id, row["validator"],
                    state)

    def _fetch(self, tmp: Path, keys: dict[str, str]) -> list[str] | None:
        paths = []
        for name, key in keys.items():
            path = tmp / "files" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with self.services.storage.open_reader("quarantine", key) as source, \
                        open(path, "wb") as target:
                    shutil.copyfileobj(source, target, 1024 * 1024)
            except FileNotFoundError:
                return None
            paths.append(str(path))
        return paths

    @staticmethod
    def _run(check: CommandCheck, tmp: Path, paths: list[str], area_id: str,
             validation_id: str, names: list[str]) -> tuple[str, dict[str, Any]]:
        out, err = tmp / "stdout", tmp / "stderr"
        env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "LANG": "C.UTF-8",
               "HOME": str(tmp), "TMPDIR": str(tmp), "AREA_ID": area_id,
               "AREA_VALIDATION_ID": validation_id, "AREA_FILES": json.dumps(names)}
        started = time.monotonic()
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 - argv from the operator, no shell
                [*check.argv, *paths], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=stderr, start_new_session=True)
            timed_out = check._wait(process)
        code = process.returncode
        stdout_tail, stderr_tail = _tail(str(out)), _tail(str(err))
        result: dict[str, Any] = {
            "exit_code": code, "stdout_tail": stdout_tail, "stderr_tail": stderr_tail,
            "duration_seconds": round((time.monotonic() - started) * 1000)}
        if timed_out:
            return "invalid", {**result, "reason": "timed_out"}
        if code == 0:
            return "valid", {**result, "reason": None}
        output = stderr_tail.strip() or stdout_tail.strip()
        reason = f"killed by signal {-code}" if code < 0 else (output or f"exit code {code}")
        return "invalid", {**result, "reason": reason[-2048:]}
