"""Logging for every role: one line per record, whatever the input.

Logged values come from outside (file names dropped in ``WATCH_DIR``, headers, ids in
messages), so ``configure`` (called once by ``app.py``) puts ``SafeFormatter`` on the root
handler, and every logger of every package goes through it:

- In the record's line, every character that a terminal or a log collector could take as
  a line break or a control sequence is written as an escape: ``\\n``, ``\\r``, other C0
  and C1 controls and DEL as ``\\xNN`` (so ESC is ``\\x1b``; tabs stay), U+2028 and
  U+2029 as ``\\u2028``/``\\u2029``. A byte of a file name that is not UTF-8 (Python holds it
  as a lone surrogate, U+DC80..U+DCFF) is written as ``\\xNN``, the byte itself; other lone
  surrogates as ``\\udNNN``. Backslashes are left alone.
- A traceback (or stack) keeps its lines, but each is indented by two spaces and escaped
  the same way, so an exception message cannot start a line of its own either.

So every line that starts at the first column starts a record, and no input can forge one.

``LOG_FORMAT=json`` (``configure(json_lines=True)``) writes each record as one JSON object
instead (python-json-logger; JSON escapes every control character, so a record is one
line there too): ``time``, ``level``, ``logger``, ``message``, ``request_id`` (the
``request_id=…`` a payload's line names, or the request being served), ``traceparent``
(the W3C trace context the request came with), and ``exc_info`` with a traceback.
"""
from __future__ import annotations

import contextvars
import datetime as dt
import logging
import os
import re
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

PROCESS_ENV = "APP_PROCESS"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONTINUATION = "  "
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}
_REQUEST_ID = re.compile(r"request_id=([A-Za-z0-9._-]{1,64})")
# the request an HTTP handler is serving (set in its prepare, cleared in on_finish)
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None)
traceparent_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "traceparent", default=None)


def _escape_char(found: re.Match[str]) -> str:
    char = found.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with nothing in it that could start a new line (see the module doc)."""
    return _UNSAFE.sub(_escape_char, text)


def _indent(text: str) -> str:
    return "\n".join(CONTINUATION + escape(line) for line in text.splitlines())


class SafeFormatter(logging.Formatter):
    """``logging.Formatter`` whose records cannot span or forge lines."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = escape(self.formatMessage(record))
        # the traceback is formatted afresh or taken from the record's cache (filled by
        # whichever handler came first), and indented here, never cached indented
        trace = self.formatException(record.exc_info) if record.exc_info else record.exc_text
        if trace:
            text += "\n" + _indent(trace)
        if record.stack_info:
            text += "\n" + _indent(self.formatStack(record.stack_info))
        return text


class JsonLines(JsonFormatter):
    """One JSON object per record, with the payload's ``request_id`` as a field."""

    def __init__(self, process: str | None = None) -> None:
        self.process_name = process
        # ASCII only: U+2028 and friends are escaped too (some collectors split on them)
        super().__init__("%(levelname)s %(name)s %(message)s",
                         rename_fields={"levelname": "level", "name": "logger"})

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        log_data["time"] = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat()
        super().add_fields(log_data, record, message_dict)
        if self.process_name:
            log_data["process"] = f"{self.process_name}[{record.process}]"
        found = _REQUEST_ID.search(record.getMessage())
        request_id = found.group(1) if found else request_id_var.get()
        if request_id:
            log_data["request_id"] = request_id
        traceparent = traceparent_var.get()
        if traceparent:
            log_data["traceparent"] = traceparent


def configure(level: int = logging.INFO, stream: TextIO | None = None,
              json_lines: bool = False) -> logging.Handler:
    """Add a handler with ``SafeFormatter`` (``JsonLines`` with ``json_lines``; to stderr
    by default) to the root logger, which every logger propagates to, and set the root
    level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    # a supervisor's child (core/supervisor.py) names itself: several share the stream
    process = os.environ.get(PROCESS_ENV)
    text = FORMAT if not process else FORMAT.replace(
        "%(name)s", f"{escape(process)}[%(process)d] %(name)s", 1)
    handler.setFormatter(JsonLines(process) if json_lines else SafeFormatter(text))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def name_process(name: str) -> None:
    """Name this process (a supervisor's child) on the root logger's handlers' lines."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, JsonLines):
            formatter.process_name = name
        elif isinstance(formatter, SafeFormatter):
            handler.setFormatter(SafeFormatter(FORMAT.replace(
                "%(name)s", f"{escape(name)}[%(process)d] %(name)s", 1)))


def json_from_env(env: Any) -> bool:
    """``LOG_FORMAT``: ``text`` (the default) or ``json``; ``ValueError`` naming it."""
    value = (env.get("LOG_FORMAT") or "text").strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, got {value!r}")
    return value == "json"
