"""The built-in ``obj`` check: a Wavefront OBJ mesh (validators/obj.py, ``check_obj``) for
the ``assets`` service by default (``VALIDATORS=…,assets:obj``). The loop hands it the
original bytes; a payload that is itself gzip-compressed is recognised by its magic.
A mesh that fails gets ``failure`` with the line-numbered reason; one that passes gets
``success`` with its counts under ``obj``."""
from __future__ import annotations

from typing import Any, BinaryIO

from validators.loop import Check, Verdict
from validators.obj import ObjLimits, check_obj


def make_check(limits: ObjLimits = ObjLimits()) -> Check:
    def obj(announcement: dict[str, Any], payload: BinaryIO) -> Verdict:
        report = check_obj(payload, limits)
        if not report.ok:
            return Verdict("failure", report.reason)
        return Verdict("success", None, {"obj": {
            "vertices": report.vertices, "texcoords": report.texcoords,
            "normals": report.normals, "faces": report.faces}})
    return obj


def from_settings(settings: Any) -> Check:
    """The registry's factory (validators.CHECKS)."""
    return make_check()
