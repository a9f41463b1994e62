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
"""
from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONTINUATION = "  "
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


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


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Add a handler with ``SafeFormatter`` (to stderr by default) to the root logger, which
    every logger propagates to, and set the root level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(SafeFormatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
