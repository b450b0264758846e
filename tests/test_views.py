"""Tag views and the cross-host check against the plain-Python models of reference_views.

Unit tests cover every constructor path, every query and every error of :class:`TagView`;
Hypothesis tests build one tagged allocation, let several hosts cut it into extents at their
own breakpoints, place the extents at their own host addresses (DPAs) with their own media
maps (DPA -> media), deliver them in their own arrival order, and demand that

(a) each view agrees granule by granule (byte by byte with granule 1) with the reference view,
(b) ``verify_views`` finds the hosts consistent, and
(c) a corrupted host (a swapped pair of sequence numbers, one extent moved in host address
    space, a view of another size, a hole in a media map) is caught at exactly the offset
    where the reference walk first sees a difference, with the same per-host media addresses.

Reference: /work/shared/reference/cxl-dcd.md §1 (sequence numbers), §4.1-4.3 (placement by
sequence number, arrival order), §6 (famfs interleave, how hosts rebuild one view).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from dcdmap import ExtentMap, TagView, ViewCheck, ViewSegments, verify_views
from dcdmap.errors import (
    AlignmentError, ArrayShapeError, DcdmapError, InputTypeError, InterleaveError,
    InvalidRangeError, OverlapError, SequenceError, UnmappedError,
)
from reference_views import PlainMap, RefSequenceProblem, RefTagView, first_difference

SPACE = 1 << 64
U64_MAX = SPACE - 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def u64(values):
    return np.asarray(values, dtype=np.uint64)


def readonly(values, dtype=np.uint64):
    a = np.array(values, dtype=dtype)
    a.flags.writeable = False
    return a


# ============================================================================= unit tests

class TestConstruction:
    STARTS = [0x9000, 0x1000, 0x5000]
    LENGTHS = [0x1000, 0x2000, 0x1000]

    @pytest.mark.parametrize("kind", ["list", "u64", "i64", "u32", "readonly", "readonly-i64"])
    def test_input_kinds(self, kind):
        conv = {
            "list": list,
            "u64": lambda v: np.array(v, np.uint64),
            "i64": lambda v: np.array(v, np.int64),
            "u32": lambda v: np.array(v, np.uint32),
            "readonly": lambda v: readonly(v),
            "readonly-i64": lambda v: readonly(v, np.int64),
        }[kind]
        v = TagView(conv(self.STARTS), conv(self.LENGTHS), conv([2, 0, 1]))
        assert v.shareable and not v.interleaved and v.chunk_size is None
        assert len(v) == v.count == 3
        assert v.size == 0x4000
        # extent 1 (seq 0) at 0, extent 2 (seq 1) at 0x2000, extent 0 (seq 2) at 0x3000
        assert v.translate(0) == 0x1000
        assert v.translate(0x2040) == 0x5040
        assert v.translate(0x3fff) == 0x9fff
        assert v.reverse(0x9000) == 0x3000
        assert v.segments().host_starts.tolist() == [0x1000, 0x5000, 0x9000]

    def test_arrival_order(self):
        v = TagView(self.STARTS, self.LENGTHS)
        assert not v.shareable
        assert v.segments().host_starts.tolist() == self.STARTS
        assert v.segments().logical_starts.tolist() == [0, 0x1000, 0x3000]
        assert v.translate(0x1000) == 0x1000 and v.translate(0x3000) == 0x5000

    def test_arrival_order_ignores_address_order(self):
        # The same extents arriving in another order give another view.
        a = TagView(self.STARTS, self.LENGTHS)
        b = TagView(self.STARTS[::-1], self.LENGTHS[::-1])
        assert a.translate(0) == 0x9000 and b.translate(0) == 0x5000

    def test_shareable_does_not_depend_on_arrival_order(self):
        a = TagView(self.STARTS, self.LENGTHS, [2, 0, 1])
        b = TagView([0x5000, 0x9000, 0x1000], [0x1000, 0x1000, 0x2000], [1, 2, 0])
        offs = np.arange(0, 0x4000, 0x40, dtype=np.uint64)
        assert a.translate_many(offs).tolist() == b.translate_many(offs).tolist()
        assert all(np.array_equal(x, y) for x, y in zip(a.segments(), b.segments()))

    def test_single_extent_and_granule(self):
        v = TagView([0x40], [0x40], [0])
        assert v.size == 0x40 and len(v) == 1 and v.translate(0x3f) == 0x7f
        w = TagView([3], [5], granule=1)
        assert w.translate(4) == 7 and w.reverse(3) == 0 and w.reverse(8) is None
        big = TagView([0x10000, 0], [0x1000, 0x1000], [1, 0], granule=4096)
        assert big.translate(0x1000) == 0x10000
        with pytest.raises(AlignmentError, match=r"extent 0: start 0x1040 .* granule 0x1000"):
            TagView([0x1040], [0x1000], granule=4096)

    def test_input_arrays_are_copied(self):
        s = np.array(self.STARTS, np.uint64)
        ln = np.array(self.LENGTHS, np.uint64)
        q = np.array([2, 0, 1], np.uint64)
        v = TagView(s, ln, q)
        vi = TagView(s, np.full(3, 0x1000, np.uint64), q, chunk_size=0x400)
        before = (v.translate_many(np.arange(0, 0x4000, 0x40)).tolist(),
                  vi.translate_many(np.arange(0, 0x3000, 0x40)).tolist())
        s[:] = 0
        ln[:] = 0
        q[:] = 7
        after = (v.translate_many(np.arange(0, 0x4000, 0x40)).tolist(),
                 vi.translate_many(np.arange(0, 0x3000, 0x40)).tolist())
        assert before == after

    def test_interleaved(self):
        # famfs: 3 strips of 0x800, chunk 0x200: chunk c -> strip c % 3, stripe c // 3
        strips = [0x10000, 0x4000, 0x8000]
        v = TagView(strips, [0x800] * 3, chunk_size=0x200)
        assert v.interleaved and v.chunk_size == 0x200 and not v.shareable
        assert v.size == 0x1800 and len(v) == 3
        assert v.translate(0) == 0x10000
        assert v.translate(0x200) == 0x4000
        assert v.translate(0x400) == 0x8000
        assert v.translate(0x600 + 0x48) == 0x10200 + 0x48
        assert v.translate(0x17ff) == 0x8000 + 3 * 0x200 + 0x1ff
        assert v.reverse(0x4200) == 0x800
        assert v.reverse(0x8000 + 0x7ff) == 0x17ff
        assert v.reverse(0x3fc0) is None and v.reverse(0x8800) is None
        segs = v.segments()
        assert segs.logical_starts.tolist() == list(range(0, 0x1800, 0x200))
        assert segs.lengths.tolist() == [0x200] * 12
        assert segs.host_starts.tolist()[:4] == [0x10000, 0x4000, 0x8000, 0x10200]
        assert "interleaved by 0x200" in repr(v)

    def test_interleaved_with_sequence_numbers_and_nstrips(self):
        a = TagView([0x10000, 0x4000, 0x8000], [0x800] * 3, [0, 1, 2], chunk_size=0x200, nstrips=3)
        b = TagView([0x8000, 0x10000, 0x4000], [0x800] * 3, [2, 0, 1], chunk_size=0x200)
        offs = np.arange(0, 0x1800, 0x40, dtype=np.uint64)
        assert a.shareable and b.shareable
        assert a.translate_many(offs).tolist() == b.translate_many(offs).tolist()
        hosts = a.translate_many(offs)
        assert b.reverse_many(hosts).tolist() == offs.tolist()

    def test_chunk_equal_to_strip_is_concatenation(self):
        v = TagView([0x8000, 0x1000], [0x1000, 0x1000], chunk_size=0x1000)
        c = TagView([0x8000, 0x1000], [0x1000, 0x1000])
        offs = np.arange(0, 0x2000, 0x40, dtype=np.uint64)
        assert v.translate_many(offs).tolist() == c.translate_many(offs).tolist()

    def test_repr_and_properties(self):
        v = TagView(self.STARTS, self.LENGTHS, [2, 0, 1])
        assert repr(v) == "TagView(3 extents, 0x4000 bytes, shareable)"
        assert repr(TagView([0], [0x40])) == "TagView(1 extents, 0x40 bytes, arrival-order)"
        with pytest.raises(AttributeError):
            v.shareable = False
        with pytest.raises(AttributeError):
            v.count = 7


class TestQueries:
    def setup_method(self):
        # logical: [0, 0x2000) -> 0x1000, [0x2000, 0x3000) -> 0x5000, [0x3000, 0x4000) -> 0x9000
        self.v = TagView([0x9000, 0x1000, 0x5000], [0x1000, 0x2000, 0x1000], [2, 0, 1])
        self.vi = TagView([0x10000, 0x4000, 0x8000], [0x800] * 3, chunk_size=0x200)

    def test_translate_past_the_end(self):
        for v in (self.v, self.vi):
            with pytest.raises(UnmappedError, match=rf"offset {v.size:#x} is outside the view \({v.size:#x} bytes\)"):
                v.translate(v.size)
            with pytest.raises(UnmappedError, match="0xffffffffffffffff"):
                v.translate(U64_MAX)
            with pytest.raises(KeyError):          # UnmappedError is a KeyError too
                v.translate(v.size + 0x40)

    def test_translate_bad_arguments(self):
        for v in (self.v, self.vi):
            with pytest.raises(InvalidRangeError, match="offset -1 is negative"):
                v.translate(-1)
            with pytest.raises(InvalidRangeError, match="64 bits"):
                v.translate(SPACE)
            with pytest.raises(InputTypeError):
                v.translate(1.0)
            with pytest.raises(InputTypeError):
                v.reverse("0x1000")

    def test_reverse_not_in_view_is_none(self):
        for v in (self.v, self.vi):
            for a in (0, 0xfff, 0x3000, 0x4fff, 0x6000, U64_MAX):
                assert v.reverse(a) is None
        assert self.v.reverse(0x1000) == 0 and self.v.reverse(0x2fff) == 0x1fff

    def test_translate_many(self):
        v = self.v
        offs = [0x3fff, 0, 0x2040, 0x1fff]
        out = v.translate_many(offs)
        assert out.dtype == np.uint64 and out.tolist() == [0x9fff, 0x1000, 0x5040, 0x2fff]
        assert v.translate_many(readonly(offs)).tolist() == out.tolist()
        assert v.translate_many(np.array(offs, np.int32)).tolist() == out.tolist()
        assert v.translate_many([]).tolist() == []
        assert v.translate_many(np.empty(0, np.float64)).tolist() == []
        with pytest.raises(UnmappedError, match=r"offsets\[1\] = 0x4000 is outside the view \(0x4000 bytes\)"):
            v.translate_many([0, 0x4000, U64_MAX])
        got = v.translate_many([0, 0x4000, U64_MAX, 0x40], missing=U64_MAX)
        assert got.tolist() == [0x1000, U64_MAX, U64_MAX, 0x1040]
        assert v.translate_many([0x4000], missing=0).tolist() == [0]

    def test_translate_many_interleaved(self):
        vi = self.vi
        offs = np.arange(0, vi.size, 0x40, dtype=np.uint64)
        assert vi.translate_many(offs).tolist() == [vi.translate(int(o)) for o in offs]
        assert vi.translate_many([]).tolist() == []
        with pytest.raises(UnmappedError, match=r"offsets\[2\] = 0x1800 is outside the view \(0x1800 bytes\)"):
            vi.translate_many([0, 0x40, 0x1800, 0x1840])
        assert vi.translate_many([0x1800, 0x200], missing=5).tolist() == [5, 0x4000]

    def test_reverse_many(self):
        for v in (self.v, self.vi):
            addrs = [0x1000, 0x5000, 0x9fc0, 0x4000, 0x8040, 0x10000]
            exp = [v.reverse(a) for a in addrs]
            got = v.reverse_many(addrs, missing=U64_MAX).tolist()
            assert got == [U64_MAX if e is None else e for e in exp]
            bad = next(i for i, e in enumerate(exp) if e is None)
            with pytest.raises(UnmappedError, match=rf"addrs\[{bad}\] = {addrs[bad]:#x}"):
                v.reverse_many(addrs)
            held = [a for a, e in zip(addrs, exp) if e is not None]
            assert v.reverse_many(readonly(held)).tolist() == [e for e in exp if e is not None]
            assert v.reverse_many([]).tolist() == []

    def test_batch_bad_arguments(self):
        for v in (self.v, self.vi):
            with pytest.raises(ArrayShapeError):
                v.translate_many(np.zeros((2, 2), np.uint64))
            with pytest.raises(InputTypeError):
                v.translate_many(np.zeros(2, np.float64))
            with pytest.raises(InputTypeError):
                v.reverse_many([0x1000, 1.5])
            with pytest.raises(InvalidRangeError, match="missing"):
                v.translate_many([0], missing=-1)
            with pytest.raises(InvalidRangeError):
                v.reverse_many([0x1000, -64])

    def test_batch_negative_offset_names_offsets(self):
        # translate_many's argument is "offsets"; the interleaved path says so, the
        # concatenated one must too.
        for v in (self.vi, self.v):
            with pytest.raises(InvalidRangeError, match=r"offsets\[0\] = -64 is negative"):
                v.translate_many([-64])

    def test_segments_and_to_map(self):
        s = self.v.segments()
        assert isinstance(s, ViewSegments)
        assert all(a.dtype == np.uint64 for a in s)
        assert s.logical_starts.tolist() == [0, 0x2000, 0x3000]
        assert s.host_starts.tolist() == [0x1000, 0x5000, 0x9000]
        assert s.lengths.tolist() == [0x2000, 0x1000, 0x1000]
        m = self.v.to_map()
        assert isinstance(m, ExtentMap)
        assert [tuple(e) for e in m] == [(0, 0x2000, 0x1000, 0), (0x2000, 0x1000, 0x5000, 1),
                                         (0x3000, 0x1000, 0x9000, 2)]
        m.remove(0, 0x1000)                        # a new map: the view is not affected
        assert self.v.translate(0) == 0x1000 and self.v.to_map().mapped_bytes == 0x4000
        mi = self.vi.to_map()
        assert mi.mapped_bytes == 0x1800 and len(mi) == 12
        assert all(e.label == 0 and e.length == 0x200 for e in mi)
        assert [mi.translate(o) for o in range(0, 0x1800, 0x40)] == \
               [self.vi.translate(o) for o in range(0, 0x1800, 0x40)]

    def test_to_map_granule(self):
        v = TagView([0x10000], [0x2000], granule=4096)
        assert v.to_map().granule == 4096
        vi = TagView([0x10000, 0], [0x2000, 0x2000], granule=4096, chunk_size=0x1000)
        assert vi.to_map().granule == 4096


class TestErrors:
    def test_sequence_gap(self):
        with pytest.raises(SequenceError, match=r"exactly 0\.\.2: extent 2 has 3, and 1 is missing"):
            TagView([0, 0x1000, 0x2000], [0x1000] * 3, [0, 2, 3])

    def test_sequence_duplicate(self):
        with pytest.raises(SequenceError, match="sequence number 1 is given twice: extents 1 and 2"):
            TagView([0, 0x1000, 0x2000], [0x1000] * 3, [0, 1, 1])
        with pytest.raises(SequenceError, match="sequence number 0 is given twice: extents 0 and 3"):
            TagView([0, 0x1000, 0x2000, 0x3000], [0x1000] * 4, [0, 2, 1, 0])

    def test_sequence_not_starting_at_zero(self):
        with pytest.raises(SequenceError, match=r"extent 2 has 3, and 0 is missing"):
            TagView([0, 0x1000, 0x2000], [0x1000] * 3, [1, 2, 3])
        with pytest.raises(SequenceError, match=r"extent 0 has 1, and 0 is missing"):
            TagView([0], [0x1000], [1])

    def test_sequence_out_of_range(self):
        with pytest.raises(SequenceError, match=r"extent 2 has 99, and 2 is missing"):
            TagView([0, 0x1000, 0x2000], [0x1000] * 3, [0, 1, 99])
        with pytest.raises(SequenceError, match=rf"extent 0 has {U64_MAX}"):
            TagView([0, 0x1000], [0x1000] * 2, [U64_MAX, 0])

    def test_sequence_many_missing(self):
        with pytest.raises(SequenceError, match=r"0, 1, 2, 3, 4, \.\.\. is missing"):
            TagView(list(range(0, 0x8000, 0x1000)), [0x1000] * 8, [8, 9, 10, 11, 12, 13, 14, 15])

    def test_sequence_errors_interleaved(self):
        with pytest.raises(SequenceError, match="given twice"):
            TagView([0, 0x1000], [0x1000] * 2, [0, 0], chunk_size=0x400)

    def test_sequence_error_is_a_value_error(self):
        with pytest.raises(ValueError):
            TagView([0, 0x1000], [0x1000] * 2, [1, 1])

    def test_overlap_names_callers_extents(self):
        with pytest.raises(OverlapError, match=r"extent 2 \[0x1800, 0x2800\) overlaps extent 0 \[0x1000, 0x2000\)"):
            TagView([0x1000, 0x5000, 0x1800], [0x1000] * 3, [2, 0, 1])
        with pytest.raises(OverlapError, match=r"extent 3 .* overlaps extent 1"):
            TagView([0x9000, 0x1000, 0x5000, 0x1fc0], [0x1000, 0x1000, 0x1000, 0x40])
        with pytest.raises(OverlapError, match=r"extent 1 .* overlaps extent 0"):
            TagView([0x1000, 0x1000], [0x1000, 0x1000], chunk_size=0x400)
        with pytest.raises(OverlapError, match=r"extent 0 .* overlaps extent 1"):
            TagView([0x1800, 0x1000], [0x1000, 0x1000], [0, 1])

    def test_alignment(self):
        with pytest.raises(AlignmentError, match=r"extent 1: start 0x1010 is not a multiple of the granule 0x40"):
            TagView([0x1000, 0x1010], [0x40, 0x40])
        with pytest.raises(AlignmentError, match=r"extent 1: length 0x50 is not a multiple of the granule 0x40"):
            TagView([0x1000, 0x2000], [0x40, 0x50], [1, 0])
        with pytest.raises(AlignmentError, match=r"extent 0: start 0x1010"):
            TagView([0x1010, 0x2000], [0x400, 0x400], chunk_size=0x200)

    def test_invalid_ranges(self):
        with pytest.raises(InvalidRangeError, match="at least one extent"):
            TagView([], [])
        with pytest.raises(InvalidRangeError, match="at least one extent"):
            TagView(np.empty(0, np.uint64), np.empty(0, np.uint64), [])
        with pytest.raises(InvalidRangeError, match="extent 1 at 0x2000 has zero length"):
            TagView([0x1000, 0x2000], [0x40, 0])
        with pytest.raises(InvalidRangeError, match="extent 0 at 0x1000 has zero length"):
            TagView([0x1000, 0x2000], [0, 0], chunk_size=0x40)
        with pytest.raises(InvalidRangeError, match="ends past 2\\*\\*64"):
            TagView([SPACE - 64], [128])
        with pytest.raises(InvalidRangeError, match="negative"):
            TagView([0x1000, -0x1000], [0x40, 0x40])
        with pytest.raises(InvalidRangeError, match=r"seqs\[0\] = -1 is negative"):
            TagView([0x1000, 0x2000], [0x40, 0x40], [-1, 0])
        with pytest.raises(InvalidRangeError, match="granule 48 is not a power of two"):
            TagView([0x1000], [0x60], granule=48)

    def test_interleave_errors(self):
        with pytest.raises(InterleaveError, match=r"equal lengths: extent 1 is 0x800, extent 0 is 0x400"):
            TagView([0x1000, 0x2000], [0x400, 0x800], chunk_size=0x400)
        # named by the caller's extent number, not by the sequence order
        with pytest.raises(InterleaveError, match=r"extent 0 is 0x800, extent 1 is 0x400"):
            TagView([0x1000, 0x2000, 0x8000], [0x800, 0x400, 0x400], [2, 0, 1], chunk_size=0x400)
        with pytest.raises(InterleaveError, match=r"strip length 0x600 is not a multiple of chunk_size 0x400"):
            TagView([0x1000, 0x2000], [0x600, 0x600], chunk_size=0x400)
        with pytest.raises(InterleaveError, match=r"chunk_size 0x420 must be a non-zero multiple of the granule 0x40"):
            TagView([0x1000, 0x2000], [0x840, 0x840], chunk_size=0x420)
        with pytest.raises(InterleaveError, match=r"chunk_size 0x400 .* granule 0x1000"):
            TagView([0x1000, 0x2000], [0x1000, 0x1000], chunk_size=0x400, granule=4096)
        with pytest.raises(InterleaveError, match="chunk_size 0x0"):
            TagView([0x1000, 0x2000], [0x800, 0x800], chunk_size=0)
        with pytest.raises(InterleaveError, match="nstrips 3 does not match the 2 extents"):
            TagView([0x1000, 0x2000], [0x800, 0x800], chunk_size=0x400, nstrips=3)
        with pytest.raises(InterleaveError, match="nstrips needs chunk_size"):
            TagView([0x1000, 0x2000], [0x800, 0x800], nstrips=2)
        with pytest.raises(InvalidRangeError):
            TagView([0x1000, 0x2000], [0x800, 0x800], chunk_size=-0x400)
        with pytest.raises(InputTypeError):
            TagView([0x1000, 0x2000], [0x800, 0x800], chunk_size=0x400, nstrips=2.0)

    def test_interleave_granule_zero_does_not_crash(self):
        # granule 0 must be refused with an error, not divide by zero in C (cdivision) and
        # kill the interpreter.  Run in a child so a crash fails this test only.
        code = ("from dcdmap import TagView\n"
                "from dcdmap.errors import DcdmapError\n"
                "try:\n"
                "    TagView([0x1000, 0x2000], [0x800, 0x800], chunk_size=0x400, granule=0)\n"
                "except DcdmapError as e:\n"
                "    print(type(e).__name__)\n")
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-500:]}"
        assert r.stdout.strip() in ("InvalidRangeError", "InterleaveError")

    def test_shapes(self):
        with pytest.raises(ArrayShapeError, match="lengths has 1 elements, starts has 2"):
            TagView([0x1000, 0x2000], [0x800])
        with pytest.raises(ArrayShapeError, match="seqs has 1 elements, starts has 2"):
            TagView([0x1000, 0x2000], [0x800, 0x800], [0])
        with pytest.raises(ArrayShapeError, match="seqs has 3 elements"):
            TagView([0x1000, 0x2000], [0x800, 0x800], [0, 1, 2], chunk_size=0x400)
        with pytest.raises(ArrayShapeError, match="one-dimensional"):
            TagView(np.zeros((2, 2), np.uint64), [0x800, 0x800])
        with pytest.raises(ArrayShapeError, match="one-dimensional"):
            TagView([0x1000], [0x800], np.zeros((1, 1), np.uint64))

    def test_types(self):
        with pytest.raises(InputTypeError, match=r"starts\[1\] = 8192.0 is not an integer"):
            TagView([0x1000, 8192.0], [0x800, 0x800])
        with pytest.raises(InputTypeError, match="lengths"):
            TagView([0x1000], np.array([2048.0]))
        with pytest.raises(InputTypeError, match="seqs"):
            TagView([0x1000], [0x800], ["0"])
        with pytest.raises(InputTypeError):
            TagView(None, [0x800])
        with pytest.raises(TypeError):
            TagView([0x1000], [0x800], None, 64)      # granule is keyword-only

    def test_errors_are_dcdmap_errors(self):
        for args, kw in [(([0], [0x40], [1]), {}), (([0, 0], [0x40, 0x40]), {}),
                         (([0, 0x40], [0x40, 0x80]), {"chunk_size": 0x40}), (([], []), {})]:
            with pytest.raises(DcdmapError):
                TagView(*args, **kw)


class TestNearTop:
    def test_extents_ending_at_2_64(self):
        w = TagView([SPACE - 0x2000, SPACE - 0x4000], [0x2000, 0x1000], [1, 0])
        assert w.size == 0x3000
        assert w.translate(0) == SPACE - 0x4000
        assert w.translate(0x1000) == SPACE - 0x2000
        assert w.translate(0x2fff) == U64_MAX
        assert w.reverse(U64_MAX) == 0x2fff
        assert w.reverse(SPACE - 0x3000) is None
        assert w.reverse_many([U64_MAX, SPACE - 0x4000]).tolist() == [0x2fff, 0]
        assert w.translate_many([0x2fff, 0x3000], missing=1).tolist() == [U64_MAX, 1]

    def test_view_of_2_64_bytes(self):
        v = TagView([0, 1 << 63], [1 << 63, 1 << 63], [1, 0])
        assert v.size == SPACE
        assert v.translate(0) == 1 << 63
        assert v.translate(U64_MAX) == (1 << 63) - 1
        assert v.reverse(0) == 1 << 63 and v.reverse(U64_MAX) == (1 << 63) - 1
        assert v.segments().lengths.tolist() == [1 << 63, 1 << 63]
        assert v.to_map().mapped_bytes == SPACE

    def test_interleaved_view_of_2_64_bytes(self):
        v = TagView([0, 1 << 63], [1 << 63, 1 << 63], chunk_size=1 << 62)
        assert v.size == SPACE
        ref = RefTagView([0, 1 << 63], [1 << 63, 1 << 63], chunk_size=1 << 62)
        for o in (0, (1 << 62) - 1, 1 << 62, 1 << 63, 3 << 62, U64_MAX):
            assert v.translate(o) == ref.translate(o)
            assert v.reverse(ref.translate(o)) == o

    def test_interleaved_at_the_top(self):
        strips = [SPACE - 0x1000, SPACE - 0x3000]
        v = TagView(strips, [0x1000, 0x1000], chunk_size=0x400)
        ref = RefTagView(strips, [0x1000, 0x1000], chunk_size=0x400)
        offs = list(range(0, 0x2000, 0x40)) + [0x1fff]
        assert v.translate_many(offs).tolist() == [ref.translate(o) for o in offs]
        assert v.translate(0x1fff) == SPACE - 0x2000 - 1
        assert v.translate(0x1bff) == U64_MAX
        assert v.reverse(U64_MAX) == 0x1bff

    def test_verify_views_of_2_64_bytes(self):
        v = TagView([0, 1 << 63], [1 << 63, 1 << 63], [1, 0])
        w = TagView([1 << 63, 0], [1 << 63, 1 << 63], [0, 1])
        chk = verify_views([v, w])
        assert chk.consistent
        # the reason states the number of bytes checked: 2**64, not 0 (addr_t overflow)
        assert "0x10000000000000000 bytes" in chk.reason, chk.reason


# ============================================================================= verify_views: unit tests

def dpa_map(entries, granule=64, leaf_capacity=256):
    """An ExtentMap DPA -> media from (dpa, length, media) triples."""
    if not entries:
        return ExtentMap(granule, leaf_capacity=leaf_capacity)
    s, ln, t = zip(*entries)
    return ExtentMap.from_arrays(list(s), list(ln), list(t), granule=granule,
                                 leaf_capacity=leaf_capacity)


class TestVerifyViewsUnit:
    def test_docstring_example(self):
        a = TagView([0x1000, 0x8000], [0x1000, 0x1000], seqs=[0, 1])
        b = TagView([0x8000, 0x1000], [0x1000, 0x1000], seqs=[1, 0])
        c = TagView([0x8000, 0x1000], [0x1000, 0x1000], seqs=[0, 1])
        ok = verify_views([a, b])
        assert isinstance(ok, ViewCheck) and ok and ok.consistent
        assert ok.offset is None and ok.media == (None, None)
        assert "all 2 hosts agree on 0x2000 bytes" == ok.reason
        bad = verify_views([a, c])
        assert not bad and bad.offset == 0 and bad.media == (0x1000, 0x8000)
        assert bad.reason == "offset 0x0 reaches media 0x1000 on host 0, 0x8000 on host 1"

    def test_names_in_reason(self):
        a = TagView([0x1000, 0x8000], [0x1000, 0x1000], [0, 1])
        c = TagView([0x8000, 0x1000], [0x1000, 0x1000], [0, 1])
        chk = verify_views([a, c], names=["alpha", "beta"])
        assert "on alpha" in chk.reason and "on beta" in chk.reason
        short = TagView([0x1000], [0x1000], [0])
        chk = verify_views([a, short], names=["alpha", "beta"])
        assert chk.offset == 0x1000 and chk.media == (0x8000, None)
        assert chk.reason == "beta reaches no media at offset 0x1000"
        chk = verify_views([short, a, short])
        assert chk.reason == "host 0, host 2 reach no media at offset 0x1000"

    def test_media_maps(self):
        a = TagView([0x1000, 0x8000], [0x1000, 0x1000], [0, 1])
        b = TagView([0x20000, 0x10000], [0x1000, 0x1000], [1, 0])
        ma = dpa_map([(0x1000, 0x1000, 0x700000), (0x8000, 0x1000, 0x500000)])
        mb = dpa_map([(0x10000, 0x800, 0x700000), (0x10800, 0x800, 0x700800), (0x20000, 0x1000, 0x500000)])
        assert verify_views([a, b], [ma, mb])
        assert not verify_views([a, b])           # without the media maps: different DPAs
        mb.remove(0x20400, 0x40)
        chk = verify_views([a, b], [ma, mb])
        assert chk.offset == 0x1400 and chk.media == (0x500400, None)

    def test_one_view(self):
        a = TagView([0x1000, 0x8000], [0x1000, 0x1000], [0, 1])
        assert verify_views([a])
        assert verify_views(iter([a]))
        m = dpa_map([(0x8000, 0x1000, 0)])
        chk = verify_views([a], [m])
        assert not chk and chk.offset == 0 and chk.media == (None,)

    def test_extentmap_views(self):
        a = TagView([0x1000, 0x8000], [0x1000, 0x1000], [0, 1])
        m = ExtentMap()
        m.insert(0, 0x800, target=0x1000)
        m.insert(0x800, 0x1800, target=0x1800)     # ... 0x2fff: a different media at 0x1000
        chk = verify_views([a, m])
        assert chk.offset == 0x1000 and chk.media == (0x8000, 0x2000)
        assert verify_views([a, a.to_map()])

    def test_interleaved_and_concatenated_agree(self):
        vi = TagView([0x10000, 0x4000], [0x800] * 2, chunk_size=0x200)
        segs = vi.segments()
        vc = TagView(segs.host_starts, segs.lengths)
        assert verify_views([vi, vc, vi.to_map()])
        other = TagView([0x10000, 0x4000], [0x800] * 2, chunk_size=0x400)
        chk = verify_views([vi, other])
        assert chk.offset == 0x200 and chk.media == (0x4000, 0x10200)

    def test_bad_arguments(self):
        a = TagView([0x1000], [0x1000])
        with pytest.raises(InvalidRangeError, match="at least one view"):
            verify_views([])
        with pytest.raises(ArrayShapeError, match="2 media maps for 1 views"):
            verify_views([a], [ExtentMap(), ExtentMap()])
        with pytest.raises(InputTypeError, match=r"views\[1\] is a list"):
            verify_views([a, [0x1000]])
        with pytest.raises(InputTypeError, match=r"media_maps\[0\] is a dict"):
            verify_views([a], [{}])

    def test_non_iterables_are_dcdmap_errors(self):
        # errors.py: every error dcdmap raises derives from DcdmapError (InputTypeError is
        # the TypeError for wrong argument types)
        a = TagView([0x1000], [0x1000])
        with pytest.raises(InputTypeError):
            verify_views(5)
        with pytest.raises(InputTypeError):
            verify_views([a], 5)

    def test_trailing_hole_in_every_host_is_reported(self):
        # Both hosts see the same two extents but neither media map maps the second one:
        # no logical byte of [0x1000, 0x2000) reaches media anywhere.  A hole in the middle
        # is reported (see below); one at the end must be too.
        a = TagView([0x1000, 0x8000], [0x1000, 0x1000], [0, 1])
        b = TagView([0x8000, 0x1000], [0x1000, 0x1000], [1, 0])
        m = dpa_map([(0x1000, 0x1000, 0x100000)])
        middle = verify_views([TagView([0x8000, 0x1000], [0x1000, 0x1000], [0, 1])] * 2,
                              [m, m])
        assert not middle and middle.offset == 0 and middle.media == (None, None)
        chk = verify_views([a, b], [m, m.copy()])
        assert not chk.consistent, chk
        assert chk.offset == 0x1000 and chk.media == (None, None)

    def test_trailing_hole_in_one_host_alone(self):
        a = TagView([0x1000, 0x8000], [0x1000, 0x1000], [0, 1])
        chk = verify_views([a], [dpa_map([(0x1000, 0x1000, 0)])])
        assert not chk.consistent, chk
        assert chk.offset == 0x1000 and chk.media == (None,)

    def test_no_media_at_all_is_not_consistent(self):
        a = TagView([0x1000], [0x1000], [0])
        chk = verify_views([a, a], [ExtentMap(), ExtentMap()])
        assert not chk.consistent, chk
        assert chk.offset == 0 and chk.media == (None, None)


# ============================================================================= Hypothesis: one view

@st.composite
def view_inputs(draw):
    """Inputs of one TagView, its kind, and the matching reference view."""
    g = draw(st.sampled_from([1, 64, 4096]))
    kind = draw(st.sampled_from(["arrival", "shareable", "interleaved", "interleaved-seq"]))
    n = draw(st.integers(1, 7))
    if kind.startswith("interleaved"):
        cs_units = draw(st.integers(1, 3))
        stripes = draw(st.integers(1, 3))
        cs = cs_units * g
        lengths = [cs * stripes] * n
    else:
        cs = None
        lengths = [draw(st.integers(1, 6)) * g for _ in range(n)]
    # disjoint host placement: a random address order with random gaps (some touching)
    addr_order = draw(st.permutations(range(n)))
    gaps = [draw(st.integers(0, 2)) * g for _ in range(n)]
    span = sum(lengths) + sum(gaps)
    where = draw(st.sampled_from(["low", "mid", "top"]))
    base = {"low": 0, "mid": draw(st.integers(0, 2**40)) * g, "top": SPACE - span}[where]
    starts = [0] * n
    pos = base
    for k, i in enumerate(addr_order):
        pos += gaps[k]
        starts[i] = pos
        pos += lengths[i]
    seqs = list(draw(st.permutations(range(n)))) if kind in ("shareable", "interleaved-seq") else None
    conv = draw(st.sampled_from(["list", "u64", "readonly"]))
    nstrips = n if kind.startswith("interleaved") and draw(st.booleans()) else None
    return dict(g=g, kind=kind, starts=starts, lengths=lengths, seqs=seqs, cs=cs, nstrips=nstrips,
                conv=conv, lo=base, hi=base + span)


def make_view(p):
    conv = {"list": list, "u64": u64, "readonly": readonly}[p["conv"]]
    kw = {"granule": p["g"]}
    if p["cs"] is not None:
        kw["chunk_size"] = p["cs"]
        if p["nstrips"] is not None:
            kw["nstrips"] = p["nstrips"]
    seqs = None if p["seqs"] is None else conv(p["seqs"])
    return TagView(conv(p["starts"]), conv(p["lengths"]), seqs, **kw)


@given(view_inputs())
def test_view_matches_reference(p):
    v = make_view(p)
    ref = RefTagView(p["starts"], p["lengths"], p["seqs"], chunk_size=p["cs"])
    g = p["g"]
    n = len(p["starts"])
    assert v.size == ref.size and len(v) == v.count == n
    assert v.shareable == (p["seqs"] is not None)
    assert v.interleaved == (p["cs"] is not None) and v.chunk_size == p["cs"]
    # forward, every granule (first and last byte), scalar and batch
    offs = sorted({o for s in range(0, ref.size, g) for o in (s, s + g - 1)})
    exp = [ref.translate(o) for o in offs]
    assert [v.translate(o) for o in offs] == exp
    assert v.translate_many(offs).tolist() == exp
    assert v.translate_many(readonly(offs[::-1])).tolist() == exp[::-1]
    past = [ref.size, ref.size + g - 1, U64_MAX]
    for o in past:
        with pytest.raises(UnmappedError):
            v.translate(o)
    mixed = offs[: len(offs) // 2] + past + offs[len(offs) // 2:]
    assert v.translate_many(mixed, missing=7).tolist() == [7 if o in past else ref.translate(o) for o in mixed]
    with pytest.raises(UnmappedError, match=rf"offsets\[{len(offs) // 2}\] = {ref.size:#x}"):
        v.translate_many(mixed)
    # backward, every granule of the host window and a little around it
    lo, hi = p["lo"], p["hi"]
    addrs = sorted({a for s in range(max(0, lo - 2 * g), min(SPACE, hi + 2 * g), g)
                    for a in (s, s + g - 1)})
    rexp = [ref.reverse(a) for a in addrs]
    assert [v.reverse(a) for a in addrs] == rexp
    assert v.reverse_many(addrs, missing=U64_MAX).tolist() == [U64_MAX if r is None else r for r in rexp]
    held = [a for a, r in zip(addrs, rexp) if r is not None]
    assert v.reverse_many(held).tolist() == [r for r in rexp if r is not None]
    if None in rexp:
        bad = rexp.index(None)
        with pytest.raises(UnmappedError, match=rf"addrs\[{bad}\] = {addrs[bad]:#x}"):
            v.reverse_many(addrs)
    # round trip
    assert v.reverse_many(v.translate_many(offs)).tolist() == offs
    # segments and to_map
    segs = v.segments()
    assert all(a.dtype == np.uint64 for a in segs)
    assert list(zip(segs.logical_starts.tolist(), segs.host_starts.tolist(), segs.lengths.tolist())) \
        == ref.segments()
    m = v.to_map()
    m.check_invariants()
    assert m.granule == g
    if p["cs"] is None:
        assert [tuple(e) for e in m] == [(ls, ln, hs, k) for k, (ls, hs, ln) in enumerate(ref.segments())]
    else:
        assert [tuple(e) for e in m] == [(ls, ln, hs, 0) for ls, hs, ln in ref.segments()]
    assert repr(v).startswith(f"TagView({n} extents, {ref.size:#x} bytes, ")


@given(st.lists(st.integers(0, 9), min_size=1, max_size=8), st.sampled_from([None, 0x40]))
def test_sequence_numbers_against_reference(seqs, cs):
    """Any list of sequence numbers: accepted iff it is a permutation of 0..n-1, and then the
    view is placed by it; otherwise a SequenceError."""
    n = len(seqs)
    starts = [k * 0x1000 for k in range(n)]
    lengths = [0x40 * (k % 3 + 1) for k in range(n)] if cs is None else [0x80] * n
    try:
        ref = RefTagView(starts, lengths, seqs, chunk_size=cs)
    except RefSequenceProblem:
        with pytest.raises(SequenceError) as e:
            TagView(starts, lengths, seqs, chunk_size=cs)
        # the culprit: the first extent whose number is out of range or already given
        first_at = {}
        for i, q in enumerate(seqs):
            if q >= n:
                assert f"extent {i} has {q}" in str(e.value)
                break
            if q in first_at:
                assert f"sequence number {q} is given twice: extents {first_at[q]} and {i}" in str(e.value)
                break
            first_at[q] = i
        else:
            raise AssertionError("the reference refused a permutation")
        return
    v = TagView(starts, lengths, seqs, chunk_size=cs)
    offs = range(0, ref.size, 0x40)
    assert v.translate_many(list(offs)).tolist() == [ref.translate(o) for o in offs]


# ============================================================================= Hypothesis: many hosts

@dataclass
class Allocation:
    """One tagged allocation: pieces of media laid end to end in logical order."""
    g: int
    pieces: list          # (logical start, length, media start), in logical order

    @property
    def size(self):
        return sum(p[1] for p in self.pieces)

    def truth(self, o):
        for ls, ln, ms in self.pieces:
            if ls <= o < ls + ln:
                return ms + (o - ls)
        return None


@dataclass
class Host:
    logical: list                 # (logical start, length) of each extent, in logical order
    dpa: list                     # its DPA, same order
    arrival: list                 # arrival order: arrival[i] = the logical index of extent i
    media: list = field(default_factory=list)   # (dpa, length, media) of the media map
    seqs: list = None             # sequence numbers as delivered (None: arrival order)
    cap: int = 256                # leaf capacity of the media map (4: many leaves)

    def inputs(self):
        starts = [self.dpa[k] for k in self.arrival]
        lengths = [self.logical[k][1] for k in self.arrival]
        return starts, lengths


@st.composite
def allocations(draw, granules=(1, 64, 4096), max_pieces=5):
    g = draw(st.sampled_from(granules))
    n = draw(st.integers(1, max_pieces))
    lens = [draw(st.integers(1, 6)) * g for _ in range(n)]
    order = draw(st.permutations(range(n)))
    gaps = [draw(st.integers(0, 3)) * g for _ in range(n)]
    span = sum(lens) + sum(gaps)
    base = draw(st.sampled_from([0, 1 << 40, SPACE - span]))
    media = [0] * n
    pos = base
    for k, i in enumerate(order):
        pos += gaps[k]
        media[i] = pos
        pos += lens[i]
    pieces, ls = [], 0
    for i in range(n):
        pieces.append((ls, lens[i], media[i]))
        ls += lens[i]
    return Allocation(g, pieces)


def media_entries(alloc, logical, dpa):
    """The media map entries (dpa, length, media) for extents ``logical`` placed at ``dpa``:
    each extent cut where the allocation's media pieces end."""
    out = []
    for (a, ln), d in zip(logical, dpa):
        for ps, pl, ms in alloc.pieces:
            x, y = max(a, ps), min(a + ln, ps + pl)
            if x < y:
                out.append((d + (x - a), y - x, ms + (x - ps)))
    return out


@st.composite
def hosts_of(draw, alloc, max_extents=6, split_media=True):
    """One host: its own cut of [0, S), its own DPAs, arrival order and media map."""
    g, S = alloc.g, alloc.size
    nb = S // g
    cuts = draw(st.sets(st.integers(1, nb - 1), max_size=max_extents - 1)) if nb > 1 else set()
    bounds = [0] + sorted(c * g for c in cuts) + [S]
    logical = [(bounds[k], bounds[k + 1] - bounds[k]) for k in range(len(bounds) - 1)]
    n = len(logical)
    dpa_order = draw(st.permutations(range(n)))
    gaps = [draw(st.integers(0, 3)) * g for _ in range(n)]
    span = S + sum(gaps)
    base = draw(st.one_of(st.sampled_from([0, SPACE - span - 64 * g]),
                          st.integers(0, 2**30).map(lambda k: k * g)))
    dpa = [0] * n
    pos = base
    for k, i in enumerate(dpa_order):
        pos += gaps[k]
        dpa[i] = pos
        pos += logical[i][1]
    arrival = list(draw(st.permutations(range(n))))
    h = Host(logical, dpa, arrival)
    h.media = media_entries(alloc, logical, dpa)
    if split_media:                       # cut some media-map entries further (more breakpoints)
        out = []
        for d, ln, m in h.media:
            if ln >= 2 * g and draw(st.booleans()):
                c = draw(st.integers(1, ln // g - 1)) * g
                out += [(d, c, m), (d + c, ln - c, m + c)]
            else:
                out.append((d, ln, m))
        h.media = out
    h.seqs = list(arrival)                # shareable: extent i arrives with its logical index
    h.cap = draw(st.sampled_from([4, 256]))
    return h


def build(h, g, shareable=True):
    """(TagView, ExtentMap media map, RefTagView, PlainMap media map) of a host."""
    starts, lengths = h.inputs()
    seqs = h.seqs if shareable else None
    view = TagView(starts, lengths, seqs, granule=g)
    ref = RefTagView(starts, lengths, seqs)
    mm = dpa_map(h.media, g, h.cap)
    return view, mm, ref, PlainMap(h.media)


def compare_check(views, mms, refs, ref_mms, g, names=None):
    """verify_views against the reference walk: same verdict, offset and media."""
    got = verify_views(views, mms, names)
    exp = first_difference(refs, ref_mms, step=g)
    try:
        note(f"engine: {got}\nreference: {exp}")
    except InvalidArgument:               # not inside a Hypothesis test
        pass
    assert isinstance(got, ViewCheck)
    if exp is None:
        assert got.consistent and bool(got), got
        assert got.offset is None and got.media == (None,) * len(views)
    else:
        assert not got.consistent and not bool(got), (got, exp)
        assert got.offset == exp[0], (got, exp)
        assert got.media == exp[1], (got, exp)
        assert f"{exp[0]:#x}" in got.reason
        if names is not None:
            unmapped = [nm for nm, m in zip(names, exp[1]) if m is None]
            for nm in unmapped or names:
                assert nm in got.reason
    return got, exp


@st.composite
def scenarios(draw, min_hosts=1, max_hosts=4, **kw):
    alloc = draw(allocations(**kw))
    nh = draw(st.integers(min_hosts, max_hosts))
    hosts = [draw(hosts_of(alloc)) for _ in range(nh)]
    return alloc, hosts


@given(scenarios())
def test_hosts_agree(sc):
    alloc, hosts = sc
    g, S = alloc.g, alloc.size
    built = [build(h, g) for h in hosts]
    offs = sorted({o for s in range(0, S, g) for o in (s, s + g - 1)})
    truth = [alloc.truth(o) for o in offs]
    for view, mm, ref, rmm in built:
        assert view.size == S
        hostaddrs = view.translate_many(offs).tolist()
        assert hostaddrs == [ref.translate(o) for o in offs]                     # (a) the view
        assert mm.translate_many(hostaddrs).tolist() == truth                    # ... and the media
        assert [rmm.translate(a) for a in hostaddrs] == truth
        assert view.reverse_many(hostaddrs).tolist() == offs
    views = [b[0] for b in built]
    mms = [b[1] for b in built]
    got, exp = compare_check(views, mms, [b[2] for b in built], [b[3] for b in built], g)
    assert exp is None and got.consistent                                        # (b)
    assert got.reason == f"all {len(hosts)} hosts agree on {S:#x} bytes"
    # the same with ExtentMap views (logical -> DPA), and with custom names
    assert verify_views([v.to_map() for v in views], mms)
    assert verify_views(views, mms, names=[f"h{k}" for k in range(len(views))])


@given(scenarios(min_hosts=2), st.data())
def test_swapped_sequence_pair_is_caught(sc, data):
    alloc, hosts = sc
    g = alloc.g
    cand = [k for k, h in enumerate(hosts) if len(h.logical) >= 2]
    assume(cand)
    k = data.draw(st.sampled_from(cand), label="host")
    h = hosts[k]
    i, j = data.draw(st.lists(st.integers(0, len(h.logical) - 1), min_size=2, max_size=2, unique=True),
                     label="positions")
    h.seqs = list(h.seqs)
    h.seqs[i], h.seqs[j] = h.seqs[j], h.seqs[i]
    built = [build(x, g) for x in hosts]
    got, exp = compare_check(*zip(*built), g)
    # independently: the first difference is where the earlier of the two swapped extents starts
    lo, hi = sorted((h.seqs[i], h.seqs[j]))
    where = h.logical[lo][0]
    assert exp is not None and exp[0] == where
    assert got.media[k] == alloc.truth(h.logical[hi][0])
    assert all(m == alloc.truth(where) for x, m in enumerate(got.media) if x != k)


@given(scenarios(min_hosts=2), st.data())
def test_shifted_extent_is_caught(sc, data):
    alloc, hosts = sc
    g = alloc.g
    k = data.draw(st.integers(0, len(hosts) - 1), label="host")
    h = hosts[k]
    e = data.draw(st.integers(0, len(h.logical) - 1), label="extent")
    ln = h.logical[e][1]
    others = [(d, h.logical[x][1]) for x, d in enumerate(h.dpa) if x != e]
    lo_all = min(h.dpa)
    hi_all = max(d + h.logical[x][1] for x, d in enumerate(h.dpa))

    def ok(d):
        return 0 <= d <= SPACE - ln and all(d + ln <= s or s + sl <= d for s, sl in others)

    cands = [h.dpa[e] + s * g for s in (-3, -2, -1, 1, 2, 3)] + [hi_all + g, lo_all - ln - g]
    cands = [d for d in cands if ok(d)]
    assume(cands)
    h.dpa = list(h.dpa)
    h.dpa[e] = data.draw(st.sampled_from(cands), label="new dpa")      # the media map stays
    built = [build(x, g) for x in hosts]
    got, exp = compare_check(*zip(*built), g)
    # the other hosts reach the right media at the extent's start, this one does not
    assert exp is not None and exp[0] == h.logical[e][0]
    assert all(m == alloc.truth(exp[0]) for x, m in enumerate(got.media) if x != k)
    assert got.media[k] != alloc.truth(exp[0])


@given(scenarios(min_hosts=2), st.data())
def test_hosts_with_different_sizes(sc, data):
    alloc, hosts = sc
    g, S = alloc.g, alloc.size
    k = data.draw(st.integers(0, len(hosts) - 1), label="host")
    h = hosts[k]
    if len(h.logical) >= 2 and data.draw(st.booleans(), label="truncate"):
        keep = data.draw(st.integers(1, len(h.logical) - 1), label="keep")
        h.logical, h.dpa = h.logical[:keep], h.dpa[:keep]
        h.arrival = [x for x in h.arrival if x < keep]
        h.seqs = list(h.arrival)
        h.media = media_entries(alloc, h.logical, h.dpa)
        where, expect_k = h.logical[-1][0] + h.logical[-1][1], None
    else:                                   # one extent more, at fresh DPA and fresh media
        extra = data.draw(st.integers(1, 4), label="extra") * g
        top = max(d + ln for d, (_, ln) in zip(h.dpa, h.logical))
        d = top + g if top + g + extra <= SPACE else min(h.dpa) - extra - g
        mlo = min(ms for _, _, ms in alloc.pieces)
        mhi = max(ms + pl for _, pl, ms in alloc.pieces)
        m = mhi + g if mhi + g + extra <= SPACE else mlo - extra - g
        assume(d >= 0 and m >= 0)
        h.logical = h.logical + [(S, extra)]
        h.dpa = h.dpa + [d]
        pos = data.draw(st.integers(0, len(h.arrival)), label="arrives at")
        h.arrival = h.arrival[:pos] + [len(h.logical) - 1] + h.arrival[pos:]
        h.seqs = list(h.arrival)
        h.media = h.media + [(d, extra, m)]
        where, expect_k = S, m
    built = [build(x, g) for x in hosts]
    assert built[k][0].size == (where if expect_k is None else S + extra)
    got, exp = compare_check(*zip(*built), g)
    assert exp is not None and exp[0] == where
    assert got.media[k] == expect_k
    assert all(got.media[x] is None if expect_k is not None else got.media[x] == alloc.truth(where)
               for x in range(len(hosts)) if x != k)


def punch_hole(alloc, h, a, b):
    """Remove logical [a, b) of host h from its media map (the engine's and the reference's
    entries)."""
    pm = PlainMap(h.media)
    for (ls, ln), d in zip(h.logical, h.dpa):
        x, y = max(a, ls), min(b, ls + ln)
        if x < y:
            pm.remove(d + (x - ls), y - x)
    h.media = [e[:3] for e in pm.extents]


@st.composite
def holes(draw, alloc, hosts, every_host):
    g, S = alloc.g, alloc.size
    nb = S // g
    a = draw(st.integers(0, nb - 1))
    b = draw(st.integers(a + 1, nb))
    if every_host:
        who = list(range(len(hosts)))
    else:
        who = sorted(draw(st.sets(st.integers(0, len(hosts) - 1), min_size=1,
                                  max_size=len(hosts) - 1)))
    return a * g, b * g, who


@given(scenarios(min_hosts=2), st.data())
def test_media_hole_in_some_hosts(sc, data):
    alloc, hosts = sc
    g = alloc.g
    a, b, who = data.draw(holes(alloc, hosts, every_host=False))
    for k in who:
        punch_hole(alloc, hosts[k], a, b)
    built = [build(x, g) for x in hosts]
    got, exp = compare_check(*zip(*built), g)
    assert exp is not None and exp[0] == a
    assert got.media == tuple(None if k in who else alloc.truth(a) for k in range(len(hosts)))
    assert all(f"host {k}" in got.reason for k in who)


@given(scenarios(min_hosts=1, max_hosts=3), st.data())
def test_media_hole_in_every_host(sc, data):
    alloc, hosts = sc
    g = alloc.g
    a, b, who = data.draw(holes(alloc, hosts, every_host=True))
    for k in who:
        punch_hole(alloc, hosts[k], a, b)
    built = [build(x, g) for x in hosts]
    got, exp = compare_check(*zip(*built), g)
    assert exp == (a, (None,) * len(hosts))


@given(scenarios(min_hosts=1, max_hosts=4))
def test_arrival_order_views_against_reference(sc):
    """Non-shareable capacity: each host places its extents in its own arrival order.  The
    hosts may or may not agree; the engine must say exactly what the reference walk says."""
    alloc, hosts = sc
    g = alloc.g
    built = [build(h, g, shareable=False) for h in hosts]
    for view, _, ref, _ in built:
        offs = list(range(0, alloc.size, g))
        assert view.translate_many(offs).tolist() == [ref.translate(o) for o in offs]
    compare_check(*zip(*built), g, names=[f"node-{k}" for k in range(len(hosts))])


@given(scenarios(min_hosts=1, max_hosts=3), st.data())
def test_views_without_media_maps(sc, data):
    """Host addresses are the media: each host's extents sit at their media addresses (each
    host's breakpoints include the allocation's piece boundaries).  Then a random corruption:
    a swapped pair, or none."""
    alloc, hosts = sc
    g = alloc.g
    views, refs = [], []
    for h in hosts:
        bounds = sorted({0, alloc.size} | {ls for ls, _ in h.logical} | {p[0] for p in alloc.pieces})
        logical = [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]
        order = data.draw(st.permutations(range(len(logical))), label="arrival")
        seqs = list(order)
        if len(logical) >= 2 and data.draw(st.booleans(), label="swap"):
            i, j = data.draw(st.lists(st.integers(0, len(logical) - 1), min_size=2, max_size=2,
                                      unique=True), label="swap positions")
            seqs[i], seqs[j] = seqs[j], seqs[i]
        starts = [alloc.truth(logical[k][0]) for k in order]
        lengths = [logical[k][1] for k in order]
        views.append(TagView(starts, lengths, seqs, granule=g))
        refs.append(RefTagView(starts, lengths, seqs))
    compare_check(views, None, refs, None, g)


# ----------------------------------------------------------------------------- interleaved hosts

@st.composite
def interleaved_scenarios(draw):
    g = draw(st.sampled_from([1, 64]))
    nstrips = draw(st.integers(1, 4))
    cs = draw(st.integers(1, 3)) * g
    stripes = draw(st.integers(1, 3))
    L = cs * stripes
    # strip media, disjoint
    order = draw(st.permutations(range(nstrips)))
    media = [0] * nstrips
    pos = draw(st.sampled_from([0, 1 << 36]))
    for i in order:
        pos += draw(st.integers(0, 2)) * g
        media[i] = pos
        pos += L
    hosts = []
    for _ in range(draw(st.integers(1, 3))):
        dorder = draw(st.permutations(range(nstrips)))
        dpa = [0] * nstrips
        pos = draw(st.integers(0, 2**20)) * g
        for i in dorder:
            pos += draw(st.integers(0, 2)) * g
            dpa[i] = pos
            pos += L
        arrival = list(draw(st.permutations(range(nstrips))))
        kind = draw(st.sampled_from(["interleaved", "interleaved", "concatenated"]))
        hosts.append((dpa, arrival, kind))
    return g, nstrips, cs, L, media, hosts


@given(interleaved_scenarios(), st.data())
def test_interleaved_hosts(sc, data):
    g, nstrips, cs, L, media, hosts = sc
    S = nstrips * L

    def truth(o):        # famfs_interleave_fileofs_to_daxofs, on the media
        c = o // cs
        return media[c % nstrips] + (c // nstrips) * cs + o % cs

    views, mms, refs, rmms = [], [], [], []
    for dpa, arrival, kind in hosts:
        entries = [(dpa[i], L, media[i]) for i in range(nstrips)]
        if kind == "interleaved":
            starts = [dpa[i] for i in arrival]
            v = TagView(starts, [L] * nstrips, arrival, granule=g, chunk_size=cs,
                        nstrips=nstrips if data.draw(st.booleans()) else None)
            r = RefTagView(starts, [L] * nstrips, arrival, chunk_size=cs)
        else:            # the same view as a concatenation of its chunks, in logical order
            starts = [dpa[c % nstrips] + (c // nstrips) * cs for c in range(S // cs)]
            v = TagView(starts, [cs] * len(starts), granule=g)
            r = RefTagView(starts, [cs] * len(starts))
        offs = list(range(0, S, g))
        assert v.translate_many(offs).tolist() == [r.translate(o) for o in offs]
        mm = dpa_map(entries, g)
        assert mm.translate_many(v.translate_many(offs)).tolist() == [truth(o) for o in offs]
        views.append(v)
        mms.append(mm)
        refs.append(r)
        rmms.append(PlainMap(entries))
    got, exp = compare_check(views, mms, refs, rmms, g)
    assert exp is None
    # a host with another chunk size (if there is one that fits) must be caught where the
    # reference sees the first difference
    alts = [c for c in range(g, L + 1, g) if L % c == 0 and c != cs]
    if alts and nstrips > 1:
        cs2 = data.draw(st.sampled_from(alts), label="other chunk size")
        dpa, arrival, _ = hosts[0]
        starts = [dpa[i] for i in arrival]
        views.append(TagView(starts, [L] * nstrips, arrival, granule=g, chunk_size=cs2))
        refs.append(RefTagView(starts, [L] * nstrips, arrival, chunk_size=cs2))
        mms.append(mms[0])
        rmms.append(rmms[0])
        got, exp = compare_check(views, mms, refs, rmms, g)
        assert exp is not None and exp[0] == min(cs, cs2)


# ----------------------------------------------------------------------------- many extents

@pytest.mark.parametrize("seed", [1, 2])
def test_many_extents_many_leaves(seed):
    """300 extents per host (the views' maps have several leaves), media maps with 4 extents
    per leaf; consistent, then three corruptions, each against the reference walk."""
    rng = np.random.default_rng(seed)
    g = 64
    npieces = 150
    lens = [int(x) * g for x in rng.integers(1, 5, npieces)]
    mpos = [0] * npieces
    pos = 1 << 32
    for i in rng.permutation(npieces).tolist():
        pos += int(rng.integers(0, 3)) * g
        mpos[i] = pos
        pos += lens[i]
    pieces, ls = [], 0
    for i in range(npieces):
        pieces.append((ls, lens[i], mpos[i]))
        ls += lens[i]
    alloc = Allocation(g, pieces)
    S = alloc.size
    hosts = []
    for k in range(3):
        n = 300
        assert S // g > n
        cuts = sorted(rng.choice(np.arange(1, S // g), size=n - 1, replace=False).tolist())
        bounds = [0] + [c * g for c in cuts] + [S]
        logical = [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]
        dpa = [0] * len(logical)
        pos = int(rng.integers(0, 1 << 20)) * g
        for i in rng.permutation(len(logical)).tolist():
            pos += int(rng.integers(0, 2)) * g
            dpa[i] = pos
            pos += logical[i][1]
        arrival = rng.permutation(len(logical)).tolist()
        h = Host(logical, dpa, arrival, media_entries(alloc, logical, dpa), list(arrival), cap=4)
        hosts.append(h)
    built = [build(h, g) for h in hosts]
    got, exp = compare_check(*zip(*built), g)
    assert exp is None
    # a swapped pair near the end of host 1's view
    h = hosts[1]
    i, j = h.arrival.index(len(h.logical) - 1), h.arrival.index(len(h.logical) - 5)
    h.seqs[i], h.seqs[j] = h.seqs[j], h.seqs[i]
    built[1] = build(h, g)
    got, exp = compare_check(*zip(*built), g)
    assert exp[0] == h.logical[-5][0]
    h.seqs[i], h.seqs[j] = h.seqs[j], h.seqs[i]
    built[1] = build(h, g)
    # host 2's extent 200 moved far away (its media map does not follow)
    h = hosts[2]
    h.dpa = list(h.dpa)
    h.dpa[200] = 1 << 50
    built[2] = build(h, g)
    got, exp = compare_check(*zip(*built), g)
    assert exp[0] == h.logical[200][0] and got.media[2] is None
    # and a hole in host 0's media map before that
    punch_hole(alloc, hosts[0], h.logical[100][0] + g, h.logical[100][0] + 2 * g)
    built[0] = build(hosts[0], g)
    got, exp = compare_check(*zip(*built), g)
    assert exp[0] == h.logical[100][0] + g and got.media[0] is None
