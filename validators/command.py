"""Command validators: a service validated by an executable, like the HCA upload service's
validator images.

Configured per service in the environment (parsed by ``core.settings``):
``VALIDATOR_COMMAND_<SERVICE>`` is the command line, split like a shell would
(``shlex``) but never run through a shell, e.g.
``VALIDATOR_COMMAND_ADVISOR="/usr/local/bin/check --strict"``; ``VALIDATOR_TIMEOUT_<SERVICE>``
its time limit in seconds (default 300). ``<SERVICE>`` is the service name upper-cased,
``-`` written ``_``.

Each payload runs ``command… <path>`` with its private temporary directory as working
directory and ``HOME``, stdin closed, and a clean environment: ``PATH`` (the validator's
own, else ``/usr/local/bin:/usr/bin:/bin``), ``LANG=C.UTF-8``, ``HOME``, ``TMPDIR``, and
``UPLOAD_PATH``, ``UPLOAD_REQUEST_ID``, ``UPLOAD_SERVICE``, ``UPLOAD_CATEGORY``,
``UPLOAD_CONTENT_TYPE``, ``UPLOAD_SIZE``, ``UPLOAD_SHA256``, ``UPLOAD_FILENAME``,
``UPLOAD_ACCOUNT``, ``UPLOAD_ORG_ID``, ``UPLOAD_METADATA`` (JSON), ``UPLOAD_TIMEOUT``
(seconds). The file holds the payload's original bytes (a payload stored gzip-compressed
is decompressed first).

Verdict: exit 0 → ``success``; any other exit → ``failure`` with the output as ``reason``
(the tail of stderr, else of stdout, else ``exit code N``); killed by a signal →
``failure`` ``killed by signal N``; still running after the timeout → its process group
gets SIGTERM, then SIGKILL 2 s later, and the verdict is ``failure`` ``timed_out``. Every
verdict carries ``command``: ``exit_code``, ``stdout_tail``, ``stderr_tail`` (last 2 KiB
each) and ``duration_seconds``, which the gateway keeps with the upload. A command that
cannot be started (missing, not executable) raises, so the loop retries and then
dead-letters the announcement.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

from validators.loop import Verdict

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
TAIL_BYTES = 2048
KILL_GRACE = 2.0
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def _tail(path: str) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


@dataclass(frozen=True)
class CommandCheck:
    """The check that runs ``argv`` on each payload."""

    argv: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT
    needs_path: ClassVar[bool] = True  # the command gets a path (validators/loop.py)

    def verify(self) -> None:
        """Raise ``FileNotFoundError`` when the executable cannot be found (start-up)."""
        if shutil.which(self.argv[0], path=os.environ.get("PATH", DEFAULT_PATH)) is None:
            raise FileNotFoundError(f"validator command {self.argv[0]!r} not found or not "
                                    "executable")

    def __call__(self, announcement: dict[str, Any], payload: BinaryIO) -> Verdict:
        path = os.path.abspath(payload.name)
        workdir = os.path.dirname(path)
        request_id = announcement.get("request_id")
        out, err = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
        started = time.monotonic()
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 - argv from the operator, no shell
                [*self.argv, path], cwd=workdir, env=self._env(announcement, path),
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True)
            timed_out = self._wait(process)
        duration = time.monotonic() - started
        details = {"exit_code": process.returncode, "stdout_tail": _tail(out),
                   "stderr_tail": _tail(err), "duration_seconds": round(duration, 3)}
        verdict = self._verdict(process.returncode, timed_out, details)
        logger.info("request_id=%s command %s exited %s after %.2fs: %s", request_id,
                    self.argv[0], process.returncode, duration, verdict.validation)
        return verdict

    def _wait(self, process: subprocess.Popen[bytes]) -> bool:
        """Wait for the command; True if it had to be killed for its timeout. Whatever it
        left running in its process group is killed either way."""
        try:
            process.wait(self.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            self._signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(KILL_GRACE)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(process.pid, signal.SIGKILL)
        process.wait()
        return timed_out

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _verdict(code: int, timed_out: bool, details: dict[str, Any]) -> Verdict:
        extra = {"command": details}
        if timed_out:
            return Verdict("failure", "timed_out", extra)
        if code == 0:
            return Verdict("success", None, extra)
        if code < 0:
            return Verdict("failure", f"killed by signal {-code}", extra)
        output = details["stderr_tail"].strip() or details["stdout_tail"].strip()
        return Verdict("failure", output or f"exit code {code}", extra)

    def _env(self, announcement: dict[str, Any], path: str) -> dict[str, str]:
        home = os.path.dirname(path)
        content = announcement.get("uncompressed") or {
            "size": announcement.get("size"),
            "sha256": (announcement.get("checksums") or {}).get("sha256", "")}
        fields = {
            "REQUEST_ID": "request_id", "SERVICE": "service", "CATEGORY": "category",
            "CONTENT_TYPE": "content_type", "FILENAME": "filename",
            "ACCOUNT": "account", "ORG_ID": "org_id",
        }
        env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "LANG": "C.UTF-8",
               "HOME": home, "TMPDIR": home, "UPLOAD_PATH": path,
               "UPLOAD_TIMEOUT": f"{self.timeout:g}",
               # the file holds the content: a compressed payload's uncompressed figures
               "UPLOAD_SIZE": str(content.get("size") or 0),
               "UPLOAD_SHA256": str(content.get("sha256") or ""),
               "UPLOAD_METADATA": json.dumps(announcement.get("metadata") or {})}
        for name, key in fields.items():
            value = announcement.get(key)
            env[f"UPLOAD_{name}"] = "" if value is None else str(value)
        return env
