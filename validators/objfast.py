"""The OBJ check's fast path (see ``validators.obj`` for the rules and the reference
checker).

How it is fast: each block of whole lines is cut into runs of same-keyword lines with
numpy. A run's "skeleton" is the run with digits and signs deleted (``f 1/2/3 4/5/6 7/8/9``
becomes ``f // // //``, ``v -0.5 1.25 2.0`` becomes ``v . . .``). When every line has its
first line's skeleton and is single spaced, the skeleton shows each number's shape, and
counting runs of digits with numpy tells that every number has all its digits: indices
are then checked against the counts (which cannot change inside a run) by their length
and leading digits, never parsed. Faces of a few shapes (triangles and quads) are grouped
by skeleton first; other coordinates go through one ``np.array(tokens, dtype=float64)``.
Anything else (odd spacing, a bad number, an index out of range, a limit reached) sends
that run to the line-by-line checker, which is the reference and writes the reason; the
tests check that both agree on mutated meshes.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from validators.obj import ObjLimits

_MIN_RUN = 4  # shorter runs go straight to the line-by-line checker
_MAX_SKELETONS = 32  # more face shapes than this in one run: line by line
_DIGITS_SIGNS = b"0123456789+-"
_NUMBER_BYTES = b"0123456789+-.eE \t\r\n"
_TAB_TO_SPACE = bytes.maketrans(b"\t", b" ")
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 13, 32]] = True

# what v, vt and vn lines hold, for both paths
V, VT, VN = 0, 1, 2
ARITY = {V: (3, 4, 6), VT: (2, 3, 1), VN: (3,)}
KEYWORD = {V: b"v", VT: b"vt", VN: b"vn"}


class FastRuns:
    """The fast path of the checker: ``_runs`` checks a block's runs of same-keyword lines
    wholesale and hands each run it cannot vouch for to ``_lines`` (the reference)."""

    limits: ObjLimits
    counts: list[int]  # v, vt, vn defined so far
    faces: int
    lineno: int

    def _lines(self, data: bytes, lineno: int) -> None:
        raise NotImplementedError

    def _runs(self, block: bytes, arr: np.ndarray, ends: np.ndarray) -> None:
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        last = len(block) - 1
        c0 = arr[starts]
        c1 = arr[np.minimum(starts + 1, last)]
        c2_space = _WHITESPACE[arr[np.minimum(starts + 2, last)]]
        is_v = c0 == ord("v")
        kind = np.full(len(ends), -1, dtype=np.int8)  # -1: anything else, 3: f
        kind[is_v & _WHITESPACE[c1]] = V
        kind[is_v & (c1 == ord("t")) & c2_space] = VT
        kind[is_v & (c1 == ord("n")) & c2_space] = VN
        kind[(c0 == ord("f")) & _WHITESPACE[c1]] = 3
        bounds = [0, *(np.flatnonzero(kind[1:] != kind[:-1]) + 1).tolist(), len(ends)]
        for a, b in itertools.pairwise(bounds):
            data = block[int(starts[a]) : int(ends[b - 1]) + 1]
            k = int(kind[a])
            n = b - a
            if k == 3:
                done = n >= _MIN_RUN and self._fast_faces(data, n)
            else:
                done = k >= 0 and n >= _MIN_RUN and self._fast_coords(data, n, k)
            if not done:
                self._lines(data, self.lineno + a)

    def _fast_coords(self, data: bytes, n: int, kind: int) -> bool:
        """A run of ``n`` v, vt or vn lines; True if all are valid (counts updated)."""
        if kind == V and self.counts[V] + n > self.limits.max_vertices:
            return False
        if not (self._fixed_point(data, n, kind) or self._parsed(data, n, kind)):
            return False
        self.counts[kind] += n
        return True

    def _fixed_point(self, data: bytes, n: int, kind: int) -> bool:
        """Lines like ``v 0.5 -1.25 2``, single spaced: checked as digit runs, unparsed."""
        data, skeleton = _skeleton(data)
        first = skeleton[: skeleton.index(b"\n") + 1]
        if len(skeleton) != n * len(first) or skeleton.count(first) != n:
            return False
        tokens = _tokens(first, data, n)
        marks = tokens[1:]
        if not marks or len(marks) not in ARITY[kind] or marks.count(marks[0]) != len(marks):
            return False
        per = {b"": 1, b".": 2}.get(marks[0])
        arr = np.frombuffer(data, dtype=np.uint8)
        if tokens[0] != KEYWORD[kind] or per is None or not _signs_ok(data, arr):
            return False
        starts, ends = _digit_runs(arr)
        # at most `per` runs per number, so the total tells each has them all; 300 digits
        # before the point at most keeps it finite
        return len(starts) == n * len(marks) * per and int((ends - starts).max()) <= 300

    def _parsed(self, data: bytes, n: int, kind: int) -> bool:
        """Any v, vt or vn lines of one arity: one split, one numpy parse."""
        tokens = data.split()
        for arity in ARITY[kind]:
            if len(tokens) == (arity + 1) * n:
                break
        else:
            return False
        keyword = KEYWORD[kind]
        if tokens[:: arity + 1].count(keyword) != n or data.translate(
            None, _NUMBER_BYTES + keyword
        ):
            return False
        del tokens[:: arity + 1]
        try:
            values = np.array(tokens, dtype=np.float64)
        except ValueError:
            return False
        return bool(np.isfinite(values).all())

    def _fast_faces(self, data: bytes, n: int) -> bool:
        """A run of ``n`` f lines; True if all are valid (count updated)."""
        if self.faces + n > self.limits.max_faces:
            return False
        data, skeleton = _skeleton(data)
        first = skeleton[: skeleton.index(b"\n") + 1]
        if len(skeleton) == n * len(first) and skeleton.count(first) == n:
            groups = [(first, data, n)]
        else:
            groups = _group_by_skeleton(data, skeleton)
        if not groups or not all(self._fast_face_group(*group) for group in groups):
            return False
        self.faces += n
        return True

    def _fast_face_group(self, skeleton: bytes, data: bytes, n: int) -> bool:
        """``n`` f lines that all have the same ``skeleton``: indices are checked as digit
        runs (count, length, leading digit) without being parsed."""
        marks = _tokens(skeleton, data, n)[1:]
        k = len(marks)
        arr = np.frombuffer(data, dtype=np.uint8)
        if k < 3 or marks.count(marks[0]) != k or not _signs_ok(data, arr):
            return False
        starts, ends = _digit_runs(arr)
        per, rest = divmod(len(starts), n * k)
        roles = _FACE_FORMS.get((marks[0], per))
        if rest or roles is None or (roles == (V, VN) and data.count(b"//") != n * k):
            return False
        if (arr[starts] == 48).any():  # index 0 or a leading zero: let the slow path judge
            return False
        lengths = (ends - starts).reshape(-1, per)
        starts = starts.reshape(-1, per)
        return all(
            _magnitudes_at_most(arr, starts[:, col], lengths[:, col], self.counts[role])
            for col, role in enumerate(roles)
        )


def _group_by_skeleton(data: bytes, skeleton: bytes) -> list[tuple[bytes, bytes, int]]:
    """The lines of ``data`` grouped by skeleton; empty if there are too many shapes."""
    groups: dict[bytes, list[bytes]] = {}
    for shape, line in zip(skeleton.split(b"\n"), data.split(b"\n")):
        groups.setdefault(shape, []).append(line)
    groups.pop(b"", None)  # after the final newline
    if len(groups) > _MAX_SKELETONS:
        return []
    return [(s + b"\n", b"\n".join(lines) + b"\n", len(lines)) for s, lines in groups.items()]


# (mark of every index token with digits and signs deleted, digit runs per token) -> roles
_FACE_FORMS = {(b"", 1): (V,), (b"/", 2): (V, VT), (b"//", 3): (V, VT, VN), (b"//", 2): (V, VN)}


def _skeleton(data: bytes) -> tuple[bytes, bytes]:
    """``data`` with tabs made spaces, and its skeleton: digits and signs deleted, so that
    ``f 1/2/3 4/5/6 7/8/9`` becomes ``f // // //`` and ``v -0.5 1.25 2`` ``v . . ``."""
    if b"\t" in data:
        data = data.translate(_TAB_TO_SPACE)
    return data, data.translate(None, _DIGITS_SIGNS)


def _tokens(skeleton: bytes, data: bytes, n: int) -> list[bytes]:
    """The tokens of ``skeleton``, the skeleton of each of the ``n`` lines of ``data``, if
    those are single spaced (one trailing space allowed), so that it shows every token;
    else []. Spacing shows in the skeleton, except around all-digit tokens."""
    line = skeleton[:-1]
    if b"\r" in line:
        return []
    if b"  " in line or line.endswith(b" "):  # maybe all-digit tokens: look at the data
        if b"  " in data:
            return []
        if b" \n" in data:
            if data.count(b" \n") != n:
                return []
            line = line[:-1]
    return line.split(b" ")


def _signs_ok(data: bytes, arr: np.ndarray) -> bool:
    """Every + or - starts a number: after a space or slash, before a digit."""
    if b"-" not in data and b"+" not in data:
        return True
    pos = np.flatnonzero((arr == 45) | (arr == 43))
    before, after = arr[pos - 1], arr[pos + 1]
    return bool((((before == 32) | (before == 47)) & ((after - 48) < 10)).all())


def _digit_runs(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the runs of digits in ``arr`` (which starts and ends with a
    non-digit)."""
    digit = (arr - 48) < 10  # wraps around for bytes below '0'
    edges = np.flatnonzero(digit[1:] != digit[:-1]) + 1
    return edges[0::2], edges[1::2]


def _magnitudes_at_most(
    arr: np.ndarray, starts: np.ndarray, lengths: np.ndarray, limit: int
) -> bool:
    """Every digit run (no leading zero) of ``arr`` at ``starts`` is at most ``limit``."""
    text = str(limit).encode()
    longest = int(lengths.max())
    if longest != len(text):
        return longest < len(text)
    picked = starts[lengths == longest]
    for offset, bound in enumerate(text):  # digit by digit, keeping runs equal so far
        digits = arr[picked + offset]
        if (digits > bound).any():
            return False
        picked = picked[digits == bound]
        if not picked.size:
            break
    return True
