"""A plain-Python reference model of :class:`dcdmap.ExtentMap` (STYLE item 11).

Deliberately naive: the map is one Python list of ``(start, last, target, label)`` tuples
kept sorted by start, and every operation is a linear scan or a rebuild of that list.
Nothing here is clever, so that it is easy to convince oneself it is right; the tests
drive the engine and this model with the same calls and compare the results, the errors
and the state after every step.

Semantics (the same as the engine's):

* an extent is a half-open range ``[start, start + length)`` of the 64-bit address space
  (an end of exactly 2**64 is allowed); it translates to ``target`` and carries a ``label``;
* every start and length is a multiple of the granule (a power of two); ``0 < length < 2**64``;
  ``target + length <= 2**64``; ``label < 2**32``;
* extents never overlap; ``insert`` of an overlapping range raises OverlapError;
* ``remove(start, length)`` unmaps that range, cutting extents that straddle its ends (the
  right-hand piece's target is advanced by the cut) and returns the bytes that were mapped.

Errors are the dcdmap ones, checked in the same order as the engine checks them, so that
a test can demand that both raise the same class for the same bad call.
"""

from __future__ import annotations

import bisect
import operator
import struct
import zlib
from collections import namedtuple

import numpy as np

from dcdmap.errors import (
    AlignmentError,
    ArrayShapeError,
    CorruptDataError,
    InputTypeError,
    InvalidRangeError,
    OverlapError,
    UnmappedError,
)

SPACE = 1 << 64          # one past the last address
U64_MAX = SPACE - 1
U32_LIMIT = 1 << 32

Extent = namedtuple("Extent", "start length target label")

# The documented serialisation: header (magic, version, reserved, granule, count), the four
# arrays little-endian (starts, lengths, targets as u8; labels as u4), then a CRC-32.
MAGIC = b"DCDMAPEM"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ")
CRC = struct.Struct("<I")


# ----------------------------------------------------------------------------- arguments

def as_int(value, what):
    """An int in 0 .. 2**64 - 1, or the error the engine raises for ``value``."""
    if type(value) is not int:
        if isinstance(value, (float, complex, str, bytes)):
            raise InputTypeError(f"{what} must be an integer, not {value!r}")
        try:
            value = operator.index(value)
        except TypeError:
            raise InputTypeError(f"{what} must be an integer, not {type(value).__name__}") from None
    if value < 0:
        raise InvalidRangeError(f"{what} {value} is negative")
    if value > U64_MAX:
        raise InvalidRangeError(f"{what} {value} does not fit in 64 bits")
    return value


def as_int_list(values, what):
    """A list of ints in 0 .. 2**64 - 1 from a 1-D integer array or a sequence of ints."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ArrayShapeError(f"{what} must be one-dimensional")
        if values.size == 0 and values.dtype.kind in "fO":
            return []
        if values.dtype.kind not in "ui":
            raise InputTypeError(f"{what} must be an array of integers, not {values.dtype}")
        out = [int(v) for v in values]
    else:
        try:
            items = list(values)
        except TypeError:
            raise InputTypeError(f"{what} must be a sequence of integers") from None
        out = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
                raise InputTypeError(f"{what} holds {item!r}, not an integer")
            out.append(int(item))
    for i, v in enumerate(out):
        if v < 0:
            raise InvalidRangeError(f"{what}[{i}] = {v} is negative")
        if v > U64_MAX:
            raise InvalidRangeError(f"{what}[{i}] = {v} does not fit in 64 bits")
    return out


def is_power_of_two(x):
    return x > 0 and x & (x - 1) == 0


def round_up(x, align):
    return -(-x // align) * align


# ----------------------------------------------------------------------------- the model

class RefMap:
    """The reference map: a sorted list of (start, last, target, label)."""

    def __init__(self, granule=64):
        granule = as_int(granule, "granule")
        if not is_power_of_two(granule):
            raise InvalidRangeError(f"granule {granule} is not a power of two")
        self.granule = granule
        self.ext = []    # (start, last, target, label), sorted by start, disjoint

    # -- helpers

    def _check_range(self, start, length):
        s = as_int(start, "start")
        n = as_int(length, "length")
        if n == 0:
            raise InvalidRangeError("zero length")
        if s % self.granule:
            raise AlignmentError(f"start {s:#x} is not a multiple of the granule")
        if n % self.granule:
            raise AlignmentError(f"length {n:#x} is not a multiple of the granule")
        if s + n > SPACE:
            raise InvalidRangeError(f"{s:#x} + {n:#x} ends past 2**64")
        return s, s + n - 1

    def _index(self, addr):
        """The position of the extent holding addr, or -1 (the last start <= addr is the
        only candidate, since extents are sorted and disjoint)."""
        i = bisect.bisect_right(self.ext, (addr, SPACE)) - 1
        if i >= 0 and self.ext[i][0] <= addr <= self.ext[i][1]:
            return i
        return -1

    def _find(self, addr):
        i = self._index(addr)
        return None if i < 0 else self.ext[i]

    def _meets(self, s, last):
        """The extents that meet [s, last], in address order.  Extents are sorted and
        disjoint, so their lasts are sorted too: walk back from the last extent that starts
        at or before ``last`` while extents still reach ``s``."""
        i = bisect.bisect_right(self.ext, (last, SPACE))
        out = []
        while i > 0 and self.ext[i - 1][1] >= s:
            i -= 1
            out.append(self.ext[i])
        return out[::-1]

    def _add(self, s, last, target, label):
        self.ext.append((s, last, target, label))
        self.ext.sort()

    # -- scalar API

    def insert(self, start, length, target=None, label=0):
        s, last = self._check_range(start, length)
        t = s if target is None else as_int(target, "target")
        if t + (last - s + 1) > SPACE:
            raise InvalidRangeError("target + length ends past 2**64")
        label = as_int(label, "label")
        if label >= U32_LIMIT:
            raise InvalidRangeError(f"label {label} does not fit in 32 bits")
        if self._meets(s, last):
            raise OverlapError(f"[{s:#x}, {last + 1:#x}) overlaps the map")
        self._add(s, last, t, label)

    def _remove_range(self, s, last):
        """Unmap [s, last]: the extents that meet it are replaced by what is left of them
        (a left piece before s, a right piece after last with its target advanced)."""
        hit = self._meets(s, last)
        if not hit:
            return 0
        gone = 0
        pieces = []
        for (es, el, et, eb) in hit:
            gone += min(el, last) - max(es, s) + 1
            if es < s:
                pieces.append((es, s - 1, et, eb))
            if el > last:
                pieces.append((last + 1, el, et + (last + 1 - es), eb))
        i = bisect.bisect_left(self.ext, hit[0])
        self.ext[i:i + len(hit)] = pieces      # still sorted: the pieces lie where ``hit`` was
        return gone

    def remove(self, start, length):
        s, last = self._check_range(start, length)
        return self._remove_range(s, last)

    def lookup(self, addr):
        a = as_int(addr, "address")
        e = self._find(a)
        return None if e is None else self._extent(e)

    def translate(self, addr):
        a = as_int(addr, "address")
        e = self._find(a)
        if e is None:
            raise UnmappedError(f"address {a:#x} is not mapped")
        return e[2] + (a - e[0])

    def __contains__(self, addr):
        return self._find(as_int(addr, "address")) is not None

    def __getitem__(self, index):
        return self._extent(self.ext[index])

    def overlapping(self, start, length):
        s, last = self._check_range(start, length)
        return [self._extent(e) for e in self._meets(s, last)]

    def _window(self, lo, hi):
        lo = as_int(lo, "lo")
        if not (isinstance(hi, int) and hi == SPACE):
            hi = as_int(hi, "hi")
        if lo >= hi:
            raise InvalidRangeError(f"empty window [{lo}, {hi})")
        return lo, hi

    def gaps(self, lo=0, hi=SPACE):
        lo, hi = self._window(lo, hi)
        holes = []
        cur = lo
        for (es, el, _, _) in self.ext:
            if el < lo:
                continue
            if es >= hi:
                break
            if es > cur:
                holes.append((cur, es - cur))
            cur = max(cur, el + 1)
        if cur < hi:
            holes.append((cur, hi - cur))
        if any(n == SPACE for _, n in holes):
            raise InvalidRangeError("a hole of 2**64 bytes has no uint64 length")
        return holes

    def find_free(self, length, align=None, lo=0, hi=SPACE):
        n = as_int(length, "length")
        if n == 0:
            raise InvalidRangeError("zero length")
        if n % self.granule:
            raise AlignmentError("length is not a multiple of the granule")
        al = self.granule if align is None else as_int(align, "align")
        if not is_power_of_two(al) or al < self.granule:
            raise AlignmentError("align must be a power of two >= the granule")
        lo, hi = self._window(lo, hi)
        s = round_up(lo, al)
        while s + n <= hi:
            blockers = self._meets(s, s + n - 1)
            if not blockers:
                return s
            s = round_up(max(e[1] for e in blockers) + 1, al)
        return None

    def coalesce(self):
        merges = 0
        out = []
        for e in self.ext:
            if out:
                ps, pl, pt, pb = out[-1]
                # (a merged extent may not reach a length of 2**64: lengths are < 2**64)
                if (pl + 1 == e[0] and pb == e[3] and pt + (pl - ps + 1) == e[2]
                        and e[1] - ps + 1 < SPACE):
                    out[-1] = (ps, e[1], pt, pb)
                    merges += 1
                    continue
            out.append(e)
        self.ext = out
        return merges

    def clear(self):
        self.ext = []

    def copy(self):
        other = RefMap(self.granule)
        other.ext = list(self.ext)
        return other

    # -- batch API

    def translate_many(self, addrs, missing=None):
        qs = as_int_list(addrs, "addrs")
        fill = None if missing is None else as_int(missing, "missing")
        out = []
        for i, a in enumerate(qs):
            e = self._find(a)
            if e is not None:
                out.append(e[2] + (a - e[0]))
            elif fill is not None:
                out.append(fill)
            else:
                raise UnmappedError(f"addrs[{i}] = {a:#x} is not mapped")
        return np.array(out, dtype=np.uint64)

    def lookup_many(self, addrs):
        qs = as_int_list(addrs, "addrs")
        return np.array([self._index(a) for a in qs], dtype=np.int64)

    def contains_many(self, addrs):
        qs = as_int_list(addrs, "addrs")
        return np.array([self._find(a) is not None for a in qs], dtype=bool)

    def labels_many(self, addrs):
        qs = as_int_list(addrs, "addrs")
        return np.array([e[3] if e is not None else -1 for e in map(self._find, qs)], dtype=np.int64)

    def classify_many(self, starts, lengths):
        """0 free, 1 within one extent, 2 covered by several, 3 partial: byte by byte."""
        starts = as_int_list(starts, "starts")
        lengths = as_int_list(lengths, "lengths")
        if len(lengths) != len(starts):
            raise ArrayShapeError("lengths and starts differ in length")
        out = []
        for s, last in self._check_batch(starts, lengths, None):
            pieces = [e for e in self.ext if e[0] <= last and e[1] >= s]
            mapped = sum(min(e[1], last) - max(e[0], s) + 1 for e in pieces)
            if not pieces:
                out.append(0)
            elif len(pieces) == 1 and pieces[0][0] <= s and pieces[0][1] >= last:
                out.append(1)
            else:
                out.append(2 if mapped == last - s + 1 else 3)
        return np.array(out, dtype=np.uint8)

    def _check_batch(self, starts, lengths, targets):
        """Each range on its own, in the caller's order; return (start, last) pairs."""
        ranges = []
        for i, (s, n) in enumerate(zip(starts, lengths)):
            if n == 0:
                raise InvalidRangeError(f"extent {i} has zero length")
            if s % self.granule:
                raise AlignmentError(f"extent {i}: start is not a multiple of the granule")
            if n % self.granule:
                raise AlignmentError(f"extent {i}: length is not a multiple of the granule")
            if s + n > SPACE:
                raise InvalidRangeError(f"extent {i} ends past 2**64")
            if targets is not None and targets[i] + n > SPACE:
                raise InvalidRangeError(f"extent {i}: target + length ends past 2**64")
            ranges.append((s, s + n - 1))
        return ranges

    def insert_many(self, starts, lengths, targets=None, labels=None):
        starts = as_int_list(starts, "starts")
        lengths = as_int_list(lengths, "lengths")
        if len(lengths) != len(starts):
            raise ArrayShapeError("lengths and starts differ in length")
        if targets is not None:
            targets = as_int_list(targets, "targets")
            if len(targets) != len(starts):
                raise ArrayShapeError("targets and starts differ in length")
        if labels is not None:
            labels = as_int_list(labels, "labels")
            if len(labels) != len(starts):
                raise ArrayShapeError("labels and starts differ in length")
            if any(b >= U32_LIMIT for b in labels):
                raise InvalidRangeError("a label does not fit in 32 bits")
        ranges = self._check_batch(starts, lengths, targets)
        by_start = sorted(ranges)
        for (s0, l0), (s1, _) in zip(by_start, by_start[1:]):
            if s1 <= l0:
                raise OverlapError("two extents of the batch overlap")
        for s, last in ranges:
            if self._meets(s, last):
                raise OverlapError("an extent of the batch overlaps the map")
        for i, (s, last) in enumerate(ranges):
            self.ext.append((s, last, s if targets is None else targets[i], 0 if labels is None else labels[i]))
        self.ext.sort()

    def remove_many(self, starts, lengths):
        starts = as_int_list(starts, "starts")
        lengths = as_int_list(lengths, "lengths")
        if len(lengths) != len(starts):
            raise ArrayShapeError("lengths and starts differ in length")
        ranges = self._check_batch(starts, lengths, None)
        return sum(self._remove_range(s, last) for s, last in ranges)

    @classmethod
    def from_arrays(cls, starts, lengths, targets=None, labels=None, *, granule=64):
        m = cls(granule)
        m.insert_many(starts, lengths, targets, labels)
        return m

    def to_arrays(self):
        return (np.array([e[0] for e in self.ext], dtype=np.uint64),
                np.array([e[1] - e[0] + 1 for e in self.ext], dtype=np.uint64),
                np.array([e[2] for e in self.ext], dtype=np.uint64),
                np.array([e[3] for e in self.ext], dtype=np.uint32))

    def to_bytes(self):
        s, n, t, b = self.to_arrays()
        body = (HEADER.pack(MAGIC, VERSION, 0, self.granule, len(self.ext))
                + s.astype("<u8").tobytes() + n.astype("<u8").tobytes()
                + t.astype("<u8").tobytes() + b.astype("<u4").tobytes())
        return body + CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data):
        data = bytes(data)
        if len(data) < HEADER.size + CRC.size:
            raise CorruptDataError("truncated")
        magic, version, _reserved, granule, count = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CorruptDataError("bad magic")
        if version != VERSION:
            raise CorruptDataError("bad version")
        if len(data) != HEADER.size + 28 * count + CRC.size:
            raise CorruptDataError("wrong size")
        if zlib.crc32(data[:-CRC.size]) != CRC.unpack_from(data, len(data) - CRC.size)[0]:
            raise CorruptDataError("checksum mismatch")
        off = HEADER.size
        cols = []
        for fmt, size in (("<Q", 8), ("<Q", 8), ("<Q", 8), ("<I", 4)):
            cols.append([struct.unpack_from(fmt, data, off + i * size)[0] for i in range(count)])
            off += size * count
        try:
            return cls.from_arrays(*cols, granule=granule)
        except (InvalidRangeError, OverlapError) as e:
            raise CorruptDataError(f"invalid map: {e}") from None

    # -- container protocol

    @staticmethod
    def _extent(e):
        return Extent(e[0], e[1] - e[0] + 1, e[2], e[3])

    def __len__(self):
        return len(self.ext)

    def __iter__(self):
        return iter([self._extent(e) for e in self.ext])

    def __eq__(self, other):
        return isinstance(other, RefMap) and self.granule == other.granule and self.ext == other.ext

    @property
    def mapped_bytes(self):
        return sum(e[1] - e[0] + 1 for e in self.ext)
