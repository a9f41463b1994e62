"""Watcher rules: which service and category a dropped file goes to, how it is processed on
the way, and which files are not for us at all.

``WATCH_RULES`` is a comma-separated list of ``PATTERN=SERVICE/CATEGORY[:OPTION...]``,
tried in order; the first rule whose pattern matches wins. A file that no rule matches goes
to ``Failed/`` (reason ``no_rule``).

- PATTERN: a glob (``fnmatch``: ``*``, ``?``, ``[...]``) matched, case-insensitively, against
  the path relative to ``WATCH_DIR`` with ``/`` separators. ``*`` also matches ``/``, so
  ``*.obj`` matches ``lab1/case_Step1.obj``. A pattern ending in ``/`` matches everything
  under that directory (``lab1/``).
- SERVICE must be one of ``VALID_UPLOAD_TYPES``; CATEGORY is ``[A-Za-z0-9._+-]+``.
- OPTION: ``gzip`` stores the payload gzip-compressed (the announcement says
  ``"compression": "gzip"``). Processing steps, applied while the name ends with their
  suffix, outermost suffix first: ``decrypt`` (``.gpg``, ``.pgp``; the ``GPG_HOME``
  keyring), ``untar`` (``.tar``, ``.tar.gz``, ``.tgz``: every regular member becomes an
  upload of its own, named ``<archive without suffix>/<member>``), ``gunzip`` (``.gz``).
  So ``x.tar.gz.gpg`` with ``:decrypt:untar`` is decrypted, then unpacked.

Default: ``*.obj=assets/obj:gzip,*.obj.gz=assets/obj:gunzip:gzip``.

Ignored everywhere (never ingested, never moved): any path component starting with ``.``,
and names ending in ``~``, ``.part``, ``.partial``, ``.tmp``, ``.crdownload`` or starting
with ``~$`` (editors' lock files): what copy tools write before renaming into place.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from core.steps import STEPS, is_ignored

DEFAULT_RULES = "*.obj=assets/obj:gzip,*.obj.gz=assets/obj:gunzip:gzip"
__all__ = ["DEFAULT_RULES", "Rule", "RuleError", "is_ignored", "match", "parse_rules"]
OPTIONS = frozenset((*STEPS, "gzip"))
_RULE = re.compile(r"^(?P<pattern>[^=]+)=(?P<service>[A-Za-z0-9_-]+)/(?P<category>[A-Za-z0-9._+-]+)"
                   r"(?P<options>(?::[a-z]+)*)$")


class RuleError(ValueError):
    """``WATCH_RULES`` cannot be parsed or names something unknown."""


@dataclass(frozen=True)
class Rule:
    pattern: str
    service: str
    category: str
    compress: bool = False
    steps: frozenset[str] = frozenset()

    @property
    def content_type(self) -> str:
        return f"application/vnd.redhat.{self.service}.{self.category}"

    def matches(self, relative: str) -> bool:
        relative = relative.lower()
        pattern = self.pattern.lower()
        if pattern.endswith("/"):
            return relative.startswith(pattern)
        return fnmatch.fnmatchcase(relative, pattern)


def parse_rules(text: str, services: Iterable[str]) -> tuple[Rule, ...]:
    """Parse ``WATCH_RULES``; raises ``RuleError`` naming the bad entry."""
    known = set(services)
    rules = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        found = _RULE.match(entry)
        if not found:
            raise RuleError(f"cannot parse rule {entry!r}: use PATTERN=SERVICE/CATEGORY[:OPTION...]")
        if found["service"] not in known:
            raise RuleError(f"rule {entry!r}: service {found['service']!r} is not in "
                            f"VALID_UPLOAD_TYPES ({', '.join(sorted(known))})")
        options = [o for o in found["options"].split(":") if o]
        unknown = set(options) - OPTIONS
        if unknown:
            raise RuleError(f"rule {entry!r}: unknown option {min(unknown)!r}; "
                            f"use {', '.join(sorted(OPTIONS))}")
        rules.append(Rule(found["pattern"].strip(), found["service"], found["category"],
                          compress="gzip" in options, steps=frozenset(options) & set(STEPS)))
    if not rules:
        raise RuleError("no rule given")
    return tuple(rules)


def match(rules: Sequence[Rule], relative: str) -> Rule | None:
    return next((rule for rule in rules if rule.matches(relative)), None)

