"""Unit and edge-case tests of the ExtentMap engine.

The state machine (test_extentmap_state.py) explores small maps at random; this file pins
down the edges on purpose: the top of the 64-bit space, each granule, the empty map, big
maps spanning thousands of leaves, every error path (right dcdmap class, right builtin,
map untouched), serialisation and its corruption, iteration under mutation, and large
random cross-checks against the reference model that take the engine's batch fast paths.
"""
from __future__ import annotations

import copy
import pickle
import re
import struct
import zlib

import numpy as np
import pytest

import dcdmap
from dcdmap import Extent, ExtentArrays, ExtentMap, Ranges
from dcdmap.errors import (
    AlignmentError,
    ArrayShapeError,
    ConcurrentModificationError,
    CorruptDataError,
    DcdmapError,
    InputTypeError,
    InvalidRangeError,
    OverlapError,
    UnmappedError,
)
from reference import CRC, HEADER, MAGIC, SPACE, VERSION, RefMap

TOP = SPACE - 1     # the last address
GRANULES = [1, 64, 4096]


# ----------------------------------------------------------------------------- helpers

def extents(m):
    return [tuple(e) for e in m]


def state(m):
    """Everything observable about a map, for before/after comparisons."""
    a = m.to_arrays()
    return (m.granule, len(m), m.mapped_bytes, *(x.tolist() for x in a))


def same_as_ref(m, ref):
    m.check_invariants()
    got, exp = m.to_arrays(), ref.to_arrays()
    for a, b in zip(got, exp):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b)
    assert len(m) == len(ref) and m.mapped_bytes == ref.mapped_bytes


def refused(m, exc, builtin, call):
    """``call()`` raises ``exc`` (a DcdmapError and a ``builtin``) and leaves ``m`` as it was."""
    before = m.copy()
    before_state = state(m)
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, DcdmapError)
    assert isinstance(info.value, builtin)
    assert str(info.value), "the error should say what is wrong"
    m.check_invariants()
    assert m == before
    assert state(m) == before_state
    return info.value


def random_layout(rng, n, granule=64, base=1 << 32, touch=0.3):
    """n disjoint extents in address order: lengths of 1..8 granules, gaps of 0..3 granules
    (a fraction ``touch`` of neighbours touch), random targets and labels."""
    lens = rng.integers(1, 9, n).astype(np.uint64) * np.uint64(granule)
    gaps = rng.integers(1, 4, n).astype(np.uint64) * np.uint64(granule)
    gaps[rng.random(n) < touch] = 0
    ends = np.uint64(base) + np.cumsum(gaps + lens, dtype=np.uint64)
    starts = ends - lens
    targets = rng.integers(0, max(1, (1 << 56) // granule), n).astype(np.uint64) * np.uint64(granule)
    labels = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    return starts, lens, targets, labels


def build(layout, granule=64, leaf_capacity=256):
    m = ExtentMap.from_arrays(*layout, granule=granule, leaf_capacity=leaf_capacity)
    ref = RefMap.from_arrays(*(a.tolist() for a in layout), granule=granule)
    return m, ref


def readonly(a):
    """A read-only view of ``a`` (strides kept: a view of a slice stays non-contiguous)."""
    a = np.array(a, dtype=np.uint64) if not isinstance(a, np.ndarray) else a.view()
    a.setflags(write=False)
    return a


# ----------------------------------------------------------------------------- construction

@pytest.mark.parametrize("granule", [1, 2, 64, 4096, 1 << 40, 1 << 63])
def test_granule_and_capacity_are_kept(granule):
    m = ExtentMap(granule, leaf_capacity=4)
    assert m.granule == granule and m.leaf_capacity == 4
    assert ExtentMap().granule == 64 and ExtentMap().leaf_capacity == dcdmap.DEFAULT_LEAF_CAPACITY
    m.insert(granule, granule)
    assert extents(m) == [(granule, granule, granule, 0)]


@pytest.mark.parametrize("granule, exc, builtin", [
    (0, InvalidRangeError, ValueError),
    (3, InvalidRangeError, ValueError),
    (96, InvalidRangeError, ValueError),
    (-64, InvalidRangeError, ValueError),
    (1 << 64, InvalidRangeError, ValueError),
    (64.0, InputTypeError, TypeError),
    ("64", InputTypeError, TypeError),
    (None, InputTypeError, TypeError),
])
def test_bad_granule(granule, exc, builtin):
    with pytest.raises(exc) as info:
        ExtentMap(granule)
    assert isinstance(info.value, builtin)


@pytest.mark.parametrize("cap", [0, 3, -1, (1 << 20) + 1])
def test_bad_leaf_capacity(cap):
    with pytest.raises(InvalidRangeError):
        ExtentMap(64, leaf_capacity=cap)


# ----------------------------------------------------------------------------- the empty map

@pytest.mark.parametrize("granule", GRANULES)
def test_empty_map_every_call(granule):
    g = granule
    m = ExtentMap(g)
    m.check_invariants()
    assert len(m) == 0 and m.mapped_bytes == 0 and not list(m)
    assert m.lookup(0) is None and m.lookup(TOP) is None
    assert 0 not in m and TOP not in m
    with pytest.raises(UnmappedError):
        m.translate(0)
    with pytest.raises(IndexError):
        m[0]
    with pytest.raises(IndexError):
        m[-1]
    ov = m.overlapping(0, g)
    assert isinstance(ov, ExtentArrays) and all(len(a) == 0 for a in ov)
    assert [a.dtype for a in ov] == [np.uint64, np.uint64, np.uint64, np.uint32]
    gp = m.gaps(0, 1000 * g)
    assert isinstance(gp, Ranges)
    assert gp.starts.tolist() == [0] and gp.lengths.tolist() == [1000 * g]
    assert m.gaps(g).lengths.tolist() == [SPACE - g]        # up to 2**64
    with pytest.raises(InvalidRangeError):
        m.gaps()                                             # a 2**64-byte hole has no length
    assert m.find_free(g) == 0
    assert m.find_free(g, lo=5 * g + 1) == 6 * g
    assert m.find_free(g, lo=SPACE - g) == SPACE - g
    assert m.find_free(2 * g, lo=SPACE - g) is None
    assert m.coalesce() == 0
    assert m.remove(0, g) == 0
    assert m.remove_many([0, 10 * g], [g, g]) == 0
    assert m.remove_many([], []) == 0
    m.insert_many([], [])
    m.insert_many(np.empty(0, np.uint64), np.empty(0, np.uint64), [], [])
    for out, dtype in ((m.translate_many([]), np.uint64), (m.lookup_many([]), np.int64),
                       (m.contains_many([]), np.bool_)):
        assert out.dtype == dtype and out.shape == (0,)
    with pytest.raises(UnmappedError):
        m.translate_many([0])
    assert m.translate_many([0, g], missing=7).tolist() == [7, 7]
    assert m.lookup_many([0, TOP]).tolist() == [-1, -1]
    assert m.contains_many([0, TOP]).tolist() == [False, False]
    arrays = m.to_arrays()
    assert [a.dtype for a in arrays] == [np.uint64, np.uint64, np.uint64, np.uint32]
    assert all(a.shape == (0,) for a in arrays)
    assert ExtentMap.from_bytes(m.to_bytes()) == m
    assert ExtentMap.from_bytes(m.to_bytes()).granule == g
    assert pickle.loads(pickle.dumps(m)) == m
    assert m.copy() == m and m == ExtentMap(g)
    m.clear()
    assert "extents=0" in repr(m) and m.nbytes >= 0
    m.check_invariants()
    assert ExtentMap.from_arrays([], [], granule=g) == m


# ----------------------------------------------------------------------------- basics per granule

@pytest.mark.parametrize("granule", GRANULES)
def test_insert_lookup_translate_remove(granule):
    g = granule
    m = ExtentMap(g, leaf_capacity=4)
    m.insert(10 * g, 4 * g, target=100 * g, label=3)
    m.insert(0, g)
    assert len(m) == 2 and m.mapped_bytes == 5 * g
    e = m.lookup(11 * g + g - 1)
    assert e == Extent(10 * g, 4 * g, 100 * g, 3)
    assert isinstance(e, Extent) and all(type(x) is int for x in e)
    assert m.translate(11 * g + g - 1) == 101 * g + g - 1
    assert m.translate(0) == 0
    assert (14 * g) not in m and (14 * g - 1) in m
    assert m[0] == Extent(0, g, 0, 0) and m[-1] == m[1] == e
    # punch a hole in the middle: two pieces, the right one's target advanced
    assert m.remove(11 * g, g) == g
    assert extents(m) == [(0, g, 0, 0), (10 * g, g, 100 * g, 3), (12 * g, 2 * g, 102 * g, 3)]
    # a range over mapped and unmapped space, cutting both ends
    assert m.remove(10 * g, 3 * g) == 2 * g
    assert extents(m) == [(0, g, 0, 0), (13 * g, g, 103 * g, 3)]
    m.check_invariants()


@pytest.mark.parametrize("granule", [64, 4096])
def test_misaligned_by_one_byte(granule):
    m = ExtentMap(granule)
    for call in (lambda: m.insert(1, granule), lambda: m.insert(0, granule + 1),
                 lambda: m.insert(granule // 2, granule // 2), lambda: m.remove(1, granule),
                 lambda: m.overlapping(0, granule - 1), lambda: m.find_free(granule + 1)):
        refused(m, AlignmentError, ValueError, call)


def test_granule_one_accepts_any_byte():
    m = ExtentMap(1, leaf_capacity=4)
    for s in range(1, 40, 3):
        m.insert(s, 2, target=1000 + s)
    m.insert(TOP, 1, target=0)
    assert m.translate(TOP) == 0 and m.translate(5) == 1005
    assert m.remove(2, 5) == 3       # bytes 2, 4, 5
    assert m.lookup(6) is None and m.translate(8) == 1008
    m.check_invariants()


@pytest.mark.parametrize("cap", [4, 5, 6, 7, 8, 16])
def test_inserts_in_random_order_keep_every_leaf_within_capacity(cap):
    """One-by-one inserts in random order: leaves fill, split and pass extents to their
    neighbours; after every insert every invariant holds (a leaf over its capacity would be
    a write past its memory).  The first sequence overflowed a leaf in one engine build."""
    sequences = [[10, 16, 2, 0, 8, 6, 4, 14, 12]]
    rng = np.random.default_rng(cap)
    sequences += [rng.permutation(400)[:150].tolist() for _ in range(20)]
    for seq in sequences:
        m = ExtentMap(64, leaf_capacity=cap)
        for k in seq:
            m.insert(k * 64, 64, target=k * 128)
            m.check_invariants()
        assert [e.start for e in m] == sorted(k * 64 for k in seq)
        assert m.translate_many([k * 64 for k in seq]).tolist() == [k * 128 for k in seq]


# ----------------------------------------------------------------------------- the top of the space

@pytest.mark.parametrize("granule", GRANULES)
def test_extent_ending_exactly_at_2_64(granule):
    g = granule
    m = ExtentMap(g, leaf_capacity=4)
    m.insert(SPACE - 4 * g, 4 * g, target=SPACE - 4 * g, label=9)
    assert m.translate(TOP) == TOP
    assert m.lookup(TOP) == Extent(SPACE - 4 * g, 4 * g, SPACE - 4 * g, 9)
    assert TOP in m and m.mapped_bytes == 4 * g
    assert m.lookup(TOP).end == SPACE and m[0].end == SPACE
    ov = m.overlapping(SPACE - g, g)
    assert ov.starts.tolist() == [SPACE - 4 * g] and ov.lengths.tolist() == [4 * g]
    assert m.gaps(SPACE - 8 * g, SPACE).starts.tolist() == [SPACE - 8 * g]
    assert m.gaps(SPACE - 8 * g, SPACE).lengths.tolist() == [4 * g]
    assert m.gaps(SPACE - 2 * g).lengths.tolist() == []
    assert m.gaps(0, SPACE).lengths.tolist() == [SPACE - 4 * g]
    assert m.find_free(g, lo=SPACE - 5 * g) == SPACE - 5 * g
    assert m.find_free(g, lo=SPACE - 4 * g) is None
    assert m.find_free(2 * g, lo=SPACE - 5 * g) is None
    refused(m, OverlapError, ValueError, lambda: m.insert(SPACE - g, g))
    refused(m, InvalidRangeError, ValueError, lambda: m.insert(SPACE - g, 2 * g))
    refused(m, InvalidRangeError, ValueError, lambda: m.insert(SPACE, g))
    refused(m, InvalidRangeError, ValueError, lambda: m.remove(SPACE - g, 2 * g))
    refused(m, InvalidRangeError, ValueError, lambda: m.insert(0, 2 * g, target=SPACE - g))
    assert m.translate_many([TOP, SPACE - 4 * g]).tolist() == [TOP, SPACE - 4 * g]
    assert m.lookup_many([TOP]).tolist() == [0] and m.contains_many([TOP]).tolist() == [True]
    # cut the top extent from both sides, then remove up to 2**64
    assert m.remove(SPACE - 4 * g, g) == g
    assert m.remove(SPACE - g, g) == g
    assert extents(m) == [(SPACE - 3 * g, 2 * g, SPACE - 3 * g, 9)]
    m.insert(SPACE - g, g, target=SPACE - g, label=9)
    assert m.coalesce() == 1
    assert extents(m) == [(SPACE - 3 * g, 3 * g, SPACE - 3 * g, 9)]
    assert ExtentMap.from_bytes(m.to_bytes()) == m
    assert m.remove(SPACE - 8 * g, 8 * g) == 3 * g and len(m) == 0
    m.check_invariants()


def test_target_may_end_exactly_at_2_64():
    m = ExtentMap(64)
    m.insert(0, 128, target=SPACE - 128)
    assert m.translate(127) == TOP
    refused(m, InvalidRangeError, ValueError, lambda: m.insert(128, 128, target=SPACE - 64))
    refused(m, InvalidRangeError, ValueError,
            lambda: m.insert_many([128], [128], targets=[SPACE - 64]))
    m.insert_many([128], [128], targets=[SPACE - 128])
    assert m.translate_many([255, 127]).tolist() == [TOP, TOP]


def test_whole_space_mapped():
    m = ExtentMap(64, leaf_capacity=4)
    m.insert(0, 1 << 63, target=0, label=1)
    m.insert(1 << 63, 1 << 63, target=5 << 60, label=1)
    assert m.mapped_bytes == SPACE
    assert m.gaps().lengths.tolist() == [] and m.gaps(5, 9).lengths.tolist() == []
    assert m.find_free(64) is None
    assert m.find_free(64, lo=123, hi=1 << 20) is None
    assert m.translate(TOP) == (5 << 60) + (1 << 63) - 1
    assert m.translate(0) == 0
    assert ExtentMap.from_bytes(m.to_bytes()) == m


def test_remove_many_can_unmap_the_whole_space():
    """Bytes unmapped by one remove_many can add up to 2**64: the return value must not wrap."""
    m = ExtentMap(64)
    m.insert(0, 1 << 63)
    m.insert(1 << 63, 1 << 63)
    ref = RefMap(64)
    ref.insert(0, 1 << 63)
    ref.insert(1 << 63, 1 << 63)
    assert ref.remove_many([0, 1 << 63], [1 << 63, 1 << 63]) == SPACE
    assert m.remove_many([0, 1 << 63], [1 << 63, 1 << 63]) == SPACE
    assert len(m) == 0 and m.mapped_bytes == 0


def test_coalesce_never_builds_an_extent_of_2_64_bytes():
    """Two extents that together cover all of the space must not merge: a length of 2**64
    does not exist (lengths are < 2**64), and the merged extent would report length 0 and
    serialise to bytes that from_bytes refuses."""
    m = ExtentMap(64)
    m.insert(0, 1 << 63)
    m.insert(1 << 63, 1 << 63)      # target = start: the targets continue
    ref = RefMap(64)
    ref.insert(0, 1 << 63)
    ref.insert(1 << 63, 1 << 63)
    assert ref.coalesce() == 0
    merges = m.coalesce()
    assert all(e.length > 0 for e in m), f"coalesce made {list(m)}"
    assert merges == 0
    assert ExtentMap.from_bytes(m.to_bytes()) == m
    same_as_ref(m, ref)


def test_find_free_alignment_near_the_top():
    m = ExtentMap(64)
    assert m.find_free(64, align=1 << 63) == 0
    assert m.find_free(64, align=1 << 63, lo=1) == 1 << 63
    assert m.find_free(64, align=1 << 63, lo=(1 << 63) + 1) is None     # rounding up passes 2**64
    m.insert(1 << 63, 64)
    assert m.find_free(64, align=1 << 63, lo=1) is None
    assert m.find_free(128, align=64, lo=SPACE - 192) == SPACE - 192
    assert m.find_free(128, align=64, lo=SPACE - 128) == SPACE - 128       # ends at 2**64
    m.insert(SPACE - 64, 64)
    assert m.find_free(128, align=64, lo=SPACE - 192) == SPACE - 192       # just fits
    assert m.find_free(128, align=64, lo=SPACE - 128) is None
    assert m.find_free(64, lo=SPACE - 128) == SPACE - 128
    assert m.find_free(64, lo=SPACE - 128, hi=SPACE - 64) == SPACE - 128
    assert m.find_free(64, lo=SPACE - 128, hi=SPACE - 65) is None
    assert m.find_free(SPACE - 64, lo=0) is None


# ----------------------------------------------------------------------------- large removals

@pytest.mark.parametrize("cap", [4, 8, 256])
@pytest.mark.parametrize("granule", [1, 64])
def test_remove_across_thousands_of_extents(cap, granule):
    rng = np.random.default_rng(cap * 7 + granule)
    layout = random_layout(rng, 5000, granule=granule)
    m, ref = build(layout, granule, cap)
    starts, lens = layout[0].tolist(), layout[1].tolist()
    # from inside extent 100 to inside extent 4200 (both cut), more than a thousand leaves
    # at capacity 4
    lo_e, hi_e = 100, 4200
    lo = starts[lo_e] + (granule if lens[lo_e] > granule else 0)
    hi = starts[hi_e] + granule
    gone = m.remove(lo, hi - lo)
    assert gone == ref.remove(lo, hi - lo)
    assert gone > 0
    same_as_ref(m, ref)
    assert m.lookup(lo - 1) is not None or lo == starts[lo_e]
    # and a punch-out in the middle of one extent, in a full leaf
    for e in list(ref)[::97]:
        if e.length >= 3 * granule:
            assert m.remove(e.start + granule, granule) == ref.remove(e.start + granule, granule)
    same_as_ref(m, ref)
    # then everything
    everything = int(layout[0][-1] + layout[1][-1]) - int(layout[0][0])
    assert m.remove(int(layout[0][0]), everything) == ref.remove(int(layout[0][0]), everything)
    assert len(m) == 0
    same_as_ref(m, ref)
    m.insert(0, granule)
    assert extents(m) == [(0, granule, 0, 0)]


@pytest.mark.parametrize("cap", [4, 5, 256])
@pytest.mark.parametrize("batch, order", [(400, "shuffled"), (2000, "shuffled"), (2000, "sorted")])
def test_remove_many_against_reference(cap, batch, order):
    """Ranges that overlap each other, mapped and unmapped space; 512 and more unsorted
    ranges take the engine's sorted path."""
    rng = np.random.default_rng(cap + batch)
    layout = random_layout(rng, 3000)
    m, ref = build(layout, 64, cap)
    lo, hi = int(layout[0][0]), int(layout[0][-1] + layout[1][-1])
    starts = (rng.integers(lo, hi, batch) // 64 * 64).astype(np.uint64)
    lengths = (rng.integers(1, 12, batch) * 64).astype(np.uint64)
    if order == "sorted":
        starts.sort()
    assert m.remove_many(starts, lengths) == ref.remove_many(starts, lengths)
    same_as_ref(m, ref)
    assert m.remove_many(starts, lengths) == 0
    same_as_ref(m, ref)


@pytest.mark.parametrize("cap", [4, 8, 256])
@pytest.mark.parametrize("before", [0, 1, 2, 7, 300])
@pytest.mark.parametrize("batch", [1, 3, 16, 1000])
def test_insert_many_after_the_end(cap, before, batch):
    """A batch that lies wholly after the map's last byte (appended as new leaves) must leave
    every leaf at least a quarter full, the old last leaf included."""
    g = 64
    m = ExtentMap(g, leaf_capacity=cap)
    ref = RefMap(g)
    for k in range(before):
        m.insert(2 * k * g, g)
        ref.insert(2 * k * g, g)
    starts = [(2 * before + 2 * k + 1) * g for k in range(batch)]
    for order in (starts, starts[::-1]):
        mm, rr = m.copy(), ref.copy()
        mm.insert_many(order, [g] * batch, labels=[5] * batch)
        rr.insert_many(order, [g] * batch, labels=[5] * batch)
        same_as_ref(mm, rr)
        assert mm.lookup_many([s + 1 for s in starts]).tolist() == list(range(before, before + batch))


# ----------------------------------------------------------------------------- error paths

def populated(granule=64, cap=4):
    m = ExtentMap(granule, leaf_capacity=cap)
    g = granule
    for k in range(0, 120, 3):
        m.insert(k * g, 2 * g, target=(1000 + k) * g, label=k % 5)
    return m


SCALAR_ERRORS = [
    # (name, call, dcdmap error, builtin)
    ("insert misaligned start", lambda m: m.insert(32, 64), AlignmentError, ValueError),
    ("insert misaligned length", lambda m: m.insert(64 * 500, 96), AlignmentError, ValueError),
    ("insert zero length", lambda m: m.insert(64 * 500, 0), InvalidRangeError, ValueError),
    ("insert end past 2**64", lambda m: m.insert(SPACE - 64, 128), InvalidRangeError, ValueError),
    ("insert start 2**64", lambda m: m.insert(SPACE, 64), InvalidRangeError, ValueError),
    ("insert length 2**64", lambda m: m.insert(0, SPACE), InvalidRangeError, ValueError),
    ("insert negative start", lambda m: m.insert(-64, 64), InvalidRangeError, ValueError),
    ("insert negative length", lambda m: m.insert(64 * 500, -64), InvalidRangeError, ValueError),
    ("insert negative target", lambda m: m.insert(64 * 500, 64, target=-64), InvalidRangeError, ValueError),
    ("insert negative label", lambda m: m.insert(64 * 500, 64, label=-1), InvalidRangeError, ValueError),
    ("insert label 2**32", lambda m: m.insert(64 * 500, 64, label=1 << 32), InvalidRangeError, ValueError),
    ("insert target past 2**64", lambda m: m.insert(64 * 500, 128, target=SPACE - 64),
     InvalidRangeError, ValueError),
    ("insert float start", lambda m: m.insert(64.0 * 500, 64), InputTypeError, TypeError),
    ("insert float length", lambda m: m.insert(64 * 500, 64.0), InputTypeError, TypeError),
    ("insert float target", lambda m: m.insert(64 * 500, 64, target=1.5), InputTypeError, TypeError),
    ("insert float label", lambda m: m.insert(64 * 500, 64, label=1.0), InputTypeError, TypeError),
    ("insert numpy float", lambda m: m.insert(np.float64(64 * 500), 64), InputTypeError, TypeError),
    ("insert str start", lambda m: m.insert("32000", 64), InputTypeError, TypeError),
    ("insert bytes start", lambda m: m.insert(b"0", 64), InputTypeError, TypeError),
    ("insert None start", lambda m: m.insert(None, 64), InputTypeError, TypeError),
    ("insert complex", lambda m: m.insert(64 * 500, 64 + 0j), InputTypeError, TypeError),
    ("insert overlapping", lambda m: m.insert(64, 64), OverlapError, ValueError),
    ("insert overlapping two", lambda m: m.insert(64, 4 * 64), OverlapError, ValueError),
    ("insert covering", lambda m: m.insert(0, 1 << 20), OverlapError, ValueError),
    ("remove misaligned", lambda m: m.remove(1, 64), AlignmentError, ValueError),
    ("remove misaligned length", lambda m: m.remove(0, 65), AlignmentError, ValueError),
    ("remove zero", lambda m: m.remove(0, 0), InvalidRangeError, ValueError),
    ("remove past 2**64", lambda m: m.remove(SPACE - 64, 128), InvalidRangeError, ValueError),
    ("remove negative", lambda m: m.remove(-64, 64), InvalidRangeError, ValueError),
    ("remove float", lambda m: m.remove(0.0, 64), InputTypeError, TypeError),
    ("remove str", lambda m: m.remove(0, "64"), InputTypeError, TypeError),
    ("translate unmapped", lambda m: m.translate(2 * 64), UnmappedError, KeyError),
    ("translate far", lambda m: m.translate(TOP), UnmappedError, KeyError),
    ("translate negative", lambda m: m.translate(-1), InvalidRangeError, ValueError),
    ("translate 2**64", lambda m: m.translate(SPACE), InvalidRangeError, ValueError),
    ("translate float", lambda m: m.translate(64.0), InputTypeError, TypeError),
    ("lookup float", lambda m: m.lookup(64.5), InputTypeError, TypeError),
    ("lookup str", lambda m: m.lookup("64"), InputTypeError, TypeError),
    ("lookup negative", lambda m: m.lookup(-64), InvalidRangeError, ValueError),
    ("contains float", lambda m: 64.0 in m, InputTypeError, TypeError),
    ("overlapping zero", lambda m: m.overlapping(0, 0), InvalidRangeError, ValueError),
    ("overlapping misaligned", lambda m: m.overlapping(32, 64), AlignmentError, ValueError),
    ("overlapping past 2**64", lambda m: m.overlapping(SPACE - 64, 128), InvalidRangeError, ValueError),
    ("gaps lo >= hi", lambda m: m.gaps(128, 128), InvalidRangeError, ValueError),
    ("gaps lo > hi", lambda m: m.gaps(256, 128), InvalidRangeError, ValueError),
    ("gaps hi 0", lambda m: m.gaps(0, 0), InvalidRangeError, ValueError),
    ("gaps hi past 2**64", lambda m: m.gaps(0, SPACE + 1), InvalidRangeError, ValueError),
    ("gaps negative lo", lambda m: m.gaps(-1, 64), InvalidRangeError, ValueError),
    ("gaps float", lambda m: m.gaps(0.0, 64), InputTypeError, TypeError),
    ("gaps float hi", lambda m: m.gaps(0, float(SPACE)), InputTypeError, TypeError),
    ("find_free zero", lambda m: m.find_free(0), InvalidRangeError, ValueError),
    ("find_free misaligned", lambda m: m.find_free(96), AlignmentError, ValueError),
    ("find_free align 3*64", lambda m: m.find_free(64, align=192), AlignmentError, ValueError),
    ("find_free align < granule", lambda m: m.find_free(64, align=32), AlignmentError, ValueError),
    ("find_free align 0", lambda m: m.find_free(64, align=0), AlignmentError, ValueError),
    ("find_free lo >= hi", lambda m: m.find_free(64, lo=640, hi=640), InvalidRangeError, ValueError),
    ("find_free negative", lambda m: m.find_free(-64), InvalidRangeError, ValueError),
    ("find_free float", lambda m: m.find_free(64.0), InputTypeError, TypeError),
    ("find_free str align", lambda m: m.find_free(64, align="64"), InputTypeError, TypeError),
]


@pytest.mark.parametrize("name, call, exc, builtin", SCALAR_ERRORS, ids=[c[0] for c in SCALAR_ERRORS])
def test_scalar_error_paths(name, call, exc, builtin):
    m = populated()
    refused(m, exc, builtin, lambda: call(m))


def f64(*v):
    return np.array(v, dtype=np.float64)


BATCH_ERRORS = [
    # translate_many / lookup_many / contains_many share the address checks
    ("float array", lambda m, f: f(f64(0, 64)), InputTypeError, TypeError),
    ("2-D array", lambda m, f: f(np.zeros((2, 2), np.uint64)), ArrayShapeError, ValueError),
    ("0-D array", lambda m, f: f(np.array(5, np.uint64)), ArrayShapeError, ValueError),
    ("bool array", lambda m, f: f(np.array([True])), InputTypeError, TypeError),
    ("object array", lambda m, f: f(np.array([64], dtype=object)), InputTypeError, TypeError),
    ("list with float", lambda m, f: f([0, 1.5]), InputTypeError, TypeError),
    ("list with str", lambda m, f: f([0, "64"]), InputTypeError, TypeError),
    ("list with None", lambda m, f: f([0, None]), InputTypeError, TypeError),
    ("a string", lambda m, f: f("0, 64"), InputTypeError, TypeError),
    ("an int", lambda m, f: f(64), InputTypeError, TypeError),
    ("None", lambda m, f: f(None), InputTypeError, TypeError),
    ("negative int array", lambda m, f: f(np.array([0, -64])), InvalidRangeError, ValueError),
    ("negative in list", lambda m, f: f([0, -1]), InvalidRangeError, ValueError),
    ("2**64 in list", lambda m, f: f([0, SPACE]), InvalidRangeError, ValueError),
]
QUERIES = {
    "translate_many": lambda m: (lambda a: m.translate_many(a, missing=0)),
    "lookup_many": lambda m: m.lookup_many,
    "contains_many": lambda m: m.contains_many,
}


@pytest.mark.parametrize("query", sorted(QUERIES))
@pytest.mark.parametrize("name, call, exc, builtin", BATCH_ERRORS, ids=[c[0] for c in BATCH_ERRORS])
def test_batch_query_error_paths(query, name, call, exc, builtin):
    m = populated()
    refused(m, exc, builtin, lambda: call(m, QUERIES[query](m)))


def test_translate_many_specific_errors():
    m = populated()
    refused(m, UnmappedError, KeyError, lambda: m.translate_many([0, 128]))
    refused(m, InvalidRangeError, ValueError, lambda: m.translate_many([0], missing=-1))
    refused(m, InvalidRangeError, ValueError, lambda: m.translate_many([0], missing=SPACE))
    refused(m, InputTypeError, TypeError, lambda: m.translate_many([0], missing=0.5))
    refused(m, InputTypeError, TypeError, lambda: m.translate_many([0], missing="x"))


def test_nested_list_is_refused():
    """A 2-D list is not a batch of addresses (either error class says so, as a ValueError
    or a TypeError; what matters is that it is a dcdmap error and nothing changes)."""
    m = populated()
    for f in (m.translate_many, m.lookup_many, m.contains_many, lambda a: m.remove_many(a, a),
              lambda a: m.insert_many(a, a)):
        with pytest.raises((ArrayShapeError, InputTypeError)):
            f([[0, 64], [128, 192]])
    m.check_invariants()


def insert_many_errors():
    g = 64
    free = 64 * 1000        # far from populated()'s extents
    return [
        ("lengths shorter", lambda m: m.insert_many([free, free + g], [g]), ArrayShapeError, ValueError),
        ("targets shorter", lambda m: m.insert_many([free], [g], targets=[]), ArrayShapeError, ValueError),
        ("labels longer", lambda m: m.insert_many([free], [g], labels=[1, 2]), ArrayShapeError, ValueError),
        ("label 2**32", lambda m: m.insert_many([free, free + g], [g, g], labels=[0, 1 << 32]),
         InvalidRangeError, ValueError),
        ("label array 2**32", lambda m: m.insert_many([free], [g], labels=np.array([1 << 32], np.uint64)),
         InvalidRangeError, ValueError),
        ("negative label", lambda m: m.insert_many([free], [g], labels=[-1]), InvalidRangeError, ValueError),
        ("float starts", lambda m: m.insert_many(f64(free), [g]), InputTypeError, TypeError),
        ("float lengths", lambda m: m.insert_many([free], f64(g)), InputTypeError, TypeError),
        ("float targets", lambda m: m.insert_many([free], [g], targets=f64(0)), InputTypeError, TypeError),
        ("float labels", lambda m: m.insert_many([free], [g], labels=f64(0)), InputTypeError, TypeError),
        ("2-D starts", lambda m: m.insert_many(np.array([[free]], np.uint64), [g]), ArrayShapeError, ValueError),
        ("2-D lengths", lambda m: m.insert_many([free], np.array([[g]], np.uint64)), ArrayShapeError, ValueError),
        ("string", lambda m: m.insert_many("abc", [g]), InputTypeError, TypeError),
        ("zero length last", lambda m: m.insert_many([free, free + g], [g, 0]), InvalidRangeError, ValueError),
        ("misaligned start last", lambda m: m.insert_many([free, free + g + 1], [g, g]), AlignmentError, ValueError),
        ("misaligned length", lambda m: m.insert_many([free, free + 2 * g], [g, g + 8]), AlignmentError, ValueError),
        ("end past 2**64", lambda m: m.insert_many([free, SPACE - g], [g, 2 * g]), InvalidRangeError, ValueError),
        ("target past 2**64", lambda m: m.insert_many([free, free + g], [g, 2 * g], targets=[0, SPACE - g]),
         InvalidRangeError, ValueError),
        ("negative start", lambda m: m.insert_many([free, -g], [g, g]), InvalidRangeError, ValueError),
        ("overlap in batch", lambda m: m.insert_many([free, free + 4 * g, free + 2 * g], [g, g, 3 * g]),
         OverlapError, ValueError),
        ("duplicate in batch", lambda m: m.insert_many([free, free], [g, g]), OverlapError, ValueError),
        ("overlap with map", lambda m: m.insert_many([free, g, free + g], [g, g, g]), OverlapError, ValueError),
        ("overlap with map, last", lambda m: m.insert_many([free + g * k for k in range(20)] + [3 * g],
                                                          [g] * 21), OverlapError, ValueError),
    ]


@pytest.mark.parametrize("name, call, exc, builtin", insert_many_errors(), ids=[c[0] for c in insert_many_errors()])
@pytest.mark.parametrize("size", ["small map", "big map"])
def test_insert_many_error_paths(size, name, call, exc, builtin):
    # on a 40-extent map most of these batches would take the merge path; on a 4000-extent
    # map (more than 16 x the batch) the one-by-one path: refusal must be whole either way
    m = populated()
    if size == "big map":
        m.insert_many(np.arange(4000, dtype=np.uint64) * 128 + (1 << 30), np.full(4000, 64, np.uint64))
    refused(m, exc, builtin, lambda: call(m))


REMOVE_MANY_ERRORS = [
    ("lengths shorter", lambda m: m.remove_many([0, 64], [64]), ArrayShapeError, ValueError),
    ("lengths longer", lambda m: m.remove_many([0], [64, 64]), ArrayShapeError, ValueError),
    ("zero length last", lambda m: m.remove_many([0, 192], [64, 0]), InvalidRangeError, ValueError),
    ("misaligned last", lambda m: m.remove_many([0, 192, 33], [64, 64, 64]), AlignmentError, ValueError),
    ("misaligned length", lambda m: m.remove_many([0, 192], [64, 100]), AlignmentError, ValueError),
    ("past 2**64", lambda m: m.remove_many([0, SPACE - 64], [64, 128]), InvalidRangeError, ValueError),
    ("negative", lambda m: m.remove_many([0, -64], [64, 64]), InvalidRangeError, ValueError),
    ("float starts", lambda m: m.remove_many(f64(0), [64]), InputTypeError, TypeError),
    ("float list", lambda m: m.remove_many([0.0], [64]), InputTypeError, TypeError),
    ("2-D", lambda m: m.remove_many(np.zeros((1, 1), np.uint64), [64]), ArrayShapeError, ValueError),
    ("None", lambda m: m.remove_many(None, [64]), InputTypeError, TypeError),
]


@pytest.mark.parametrize("name, call, exc, builtin", REMOVE_MANY_ERRORS, ids=[c[0] for c in REMOVE_MANY_ERRORS])
def test_remove_many_error_paths(name, call, exc, builtin):
    m = populated()
    refused(m, exc, builtin, lambda: call(m))


def test_error_messages_name_the_culprit():
    m = populated()
    e = refused(m, OverlapError, ValueError, lambda: m.insert_many([64000, 64 * 3], [64, 64]))
    assert re.search(r"\b1\b", str(e)), e
    e = refused(m, AlignmentError, ValueError, lambda: m.remove_many([0, 0, 33], [64, 64, 64]))
    assert re.search(r"\b2\b", str(e)), e
    e = refused(m, UnmappedError, KeyError, lambda: m.translate(0x1234 * 64))
    assert hex(0x1234 * 64) in str(e)


def test_from_arrays_errors():
    for call, exc, builtin in [
        (lambda: ExtentMap.from_arrays([0, 64], [128, 64]), OverlapError, ValueError),
        (lambda: ExtentMap.from_arrays([0], [0]), InvalidRangeError, ValueError),
        (lambda: ExtentMap.from_arrays([1], [64]), AlignmentError, ValueError),
        (lambda: ExtentMap.from_arrays([0], [64, 64]), ArrayShapeError, ValueError),
        (lambda: ExtentMap.from_arrays(f64(0), [64]), InputTypeError, TypeError),
        (lambda: ExtentMap.from_arrays([0], [64], labels=[1 << 32]), InvalidRangeError, ValueError),
        (lambda: ExtentMap.from_arrays([0], [64], granule=48), InvalidRangeError, ValueError),
        (lambda: ExtentMap.from_arrays([0], [64], leaf_capacity=2), InvalidRangeError, ValueError),
    ]:
        with pytest.raises(exc) as info:
            call()
        assert isinstance(info.value, builtin)


def test_getitem_errors():
    m = populated()
    n = len(m)
    assert m[n - 1] == m[-1] and m[-n] == m[0]
    for i in (n, -n - 1, 1 << 40, -(1 << 40)):
        with pytest.raises(IndexError):
            m[i]
    with pytest.raises(TypeError):
        m["0"]
    with pytest.raises(TypeError):
        m[1.0]


def test_getitem_huge_index_is_an_index_error():
    """Like a list, an index too large for a C integer is out of range (IndexError), not an
    OverflowError."""
    m = populated()
    with pytest.raises(IndexError):
        m[1 << 70]
    with pytest.raises(IndexError):
        m[-(1 << 70)]


def test_failed_mutation_does_not_disturb_an_iterator():
    m = populated()
    it = iter(m)
    first = next(it)
    with pytest.raises(OverlapError):
        m.insert(0, 64)
    with pytest.raises(AlignmentError):
        m.insert_many([64000], [1])
    assert [first, *it] == list(m)


# ----------------------------------------------------------------------------- read-only and odd arrays

def test_every_batch_call_accepts_read_only_arrays():
    rng = np.random.default_rng(5)
    layout = random_layout(rng, 2000)
    ro = [readonly(a) for a in layout]
    m = ExtentMap.from_arrays(*ro, leaf_capacity=8)
    ref = RefMap.from_arrays(*(a.tolist() for a in layout))
    same_as_ref(m, ref)
    q = readonly(np.concatenate([layout[0], layout[0] + layout[1] - np.uint64(1),
                                 rng.integers(int(layout[0][0]), int(layout[0][-1]), 2000).astype(np.uint64)]))
    for qq in (q, readonly(q[:300]), readonly(np.sort(q))):
        assert m.translate_many(qq, missing=1).tolist() == ref.translate_many(qq, missing=1).tolist()
        assert m.lookup_many(qq).tolist() == ref.lookup_many(qq).tolist()
        assert m.contains_many(qq).tolist() == ref.contains_many(qq).tolist()
    mapped = readonly(layout[0])
    assert m.translate_many(mapped).tolist() == layout[2].tolist()
    # mutations from read-only arrays (labels read-only uint32 too)
    new = random_layout(rng, 300, base=1 << 45)
    m.insert_many(*(readonly(a) for a in new))
    ref.insert_many(*(a.tolist() for a in new))
    same_as_ref(m, ref)
    rs, rl = readonly(new[0][::3]), readonly(new[1][::3])
    assert m.remove_many(rs, rl) == ref.remove_many(rs, rl)
    same_as_ref(m, ref)
    m2 = ExtentMap.from_bytes(memoryview(m.to_bytes()))
    assert m2 == m


@pytest.mark.parametrize("dtype", [np.uint64, np.int64, np.uint32, np.int32, np.uint16, ">u8", "<u8", ">i8"])
def test_integer_dtypes_and_strided_arrays(dtype):
    m = populated()
    ref = RefMap(64)
    for e in m:
        ref.insert(*e)
    q = np.arange(0, 64 * 130, 16).astype(dtype)
    exp = ref.translate_many(q.tolist(), missing=3).tolist()
    assert m.translate_many(q, missing=3).tolist() == exp
    assert m.translate_many(q[::2], missing=3).tolist() == exp[::2]      # non-contiguous
    assert m.translate_many(q[::-1], missing=3).tolist() == exp[::-1]
    assert m.contains_many(q[::3]).tolist() == ref.contains_many(q[::3].tolist()).tolist()
    assert m.lookup_many(q).tolist() == ref.lookup_many(q.tolist()).tolist()


def test_sequences_of_numpy_scalars_and_tuples():
    m = populated()
    assert m.translate_many((np.uint64(0), np.int32(64), 200 * 64), missing=0).tolist() == [1000 * 64, 1000 * 64 + 64, 0]
    assert m.translate_many(iter([0])).tolist() == [1000 * 64]


# ----------------------------------------------------------------------------- serialisation

@pytest.mark.parametrize("granule", [1, 64, 4096, 1 << 40])
def test_to_bytes_round_trip(granule):
    rng = np.random.default_rng(granule % 1000)
    layout = random_layout(rng, 3000, granule=granule, base=granule * 16)
    layout[3][:3] = [0, 1, (1 << 32) - 1]
    m, ref = build(layout, granule, 16)
    data = m.to_bytes()
    assert isinstance(data, bytes)
    assert data == ref.to_bytes()              # the documented format, byte for byte
    assert len(data) == HEADER.size + 28 * len(m) + CRC.size
    for src in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        back = ExtentMap.from_bytes(src)
        assert back == m and back.granule == granule
        back.check_invariants()
        assert extents(back) == extents(m)
    assert ExtentMap.from_bytes(data, leaf_capacity=5).leaf_capacity == 5
    assert RefMap.from_bytes(data) == ref


def test_to_bytes_large_with_top_of_space():
    rng = np.random.default_rng(1)
    layout = random_layout(rng, 100_000)
    m = ExtentMap.from_arrays(*layout)
    m.insert(SPACE - 4096, 4096, target=SPACE - 4096, label=(1 << 32) - 1)
    back = ExtentMap.from_bytes(m.to_bytes())
    assert back == m and len(back) == 100_001
    assert back.translate(TOP) == TOP and back[-1].label == (1 << 32) - 1
    for a, b in zip(back.to_arrays(), m.to_arrays()):
        assert np.array_equal(a, b)


def small_serialised():
    m = ExtentMap(4096, leaf_capacity=4)
    m.insert_many([0, 8192, 4 * 4096], [4096, 4096, 8192], targets=[1 << 40, 0, 5 << 12], labels=[1, 2, 3])
    return m, m.to_bytes()


def test_from_bytes_truncated_anywhere():
    m, data = small_serialised()
    for cut in range(len(data)):
        with pytest.raises(CorruptDataError) as info:
            ExtentMap.from_bytes(data[:cut])
        assert isinstance(info.value, ValueError)
    big = ExtentMap.from_arrays(*random_layout(np.random.default_rng(2), 5000)).to_bytes()
    for cut in list(range(0, 64)) + list(range(64, len(big), 997)) + [len(big) - 1]:
        with pytest.raises(CorruptDataError):
            ExtentMap.from_bytes(big[:cut])


def test_from_bytes_flipped_bytes_anywhere():
    m, data = small_serialised()
    for pos in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= mask
            with pytest.raises(CorruptDataError):
                ExtentMap.from_bytes(bytes(bad))
    assert ExtentMap.from_bytes(data) == m        # the original still reads


def test_from_bytes_bad_magic_version_and_trailing_bytes():
    m, data = small_serialised()
    with pytest.raises(CorruptDataError, match="magic"):
        ExtentMap.from_bytes(b"NOTAMAP!" + data[8:])
    for version in (0, 2, 0xFFFFFFFF):
        bad = data[:8] + struct.pack("<I", version) + data[12:]
        bad = bad[:-4] + CRC.pack(zlib.crc32(bad[:-4]))          # a valid checksum
        with pytest.raises(CorruptDataError, match="version"):
            ExtentMap.from_bytes(bad)
    for extra in (b"\0", b"\0" * 28, data):
        with pytest.raises(CorruptDataError):
            ExtentMap.from_bytes(data + extra)
    with pytest.raises(CorruptDataError):
        ExtentMap.from_bytes(b"")


def craft(granule, starts, lengths, targets, labels, count=None):
    """Bytes in the serialised format with a valid checksum, whatever they describe."""
    n = len(starts) if count is None else count
    body = (HEADER.pack(MAGIC, VERSION, 0, granule, n)
            + np.array(starts, "<u8").tobytes() + np.array(lengths, "<u8").tobytes()
            + np.array(targets, "<u8").tobytes() + np.array(labels, "<u4").tobytes())
    return body + CRC.pack(zlib.crc32(body))


@pytest.mark.parametrize("what, args", [
    ("overlap", (64, [0, 64], [128, 64], [0, 0], [0, 0])),
    ("unsorted overlap", (64, [640, 0], [64, 1024], [0, 0], [0, 0])),
    ("zero length", (64, [0], [0], [0], [0])),
    ("misaligned", (64, [32], [64], [0], [0])),
    ("end past 2**64", (64, [SPACE - 64], [128], [0], [0])),
    ("target past 2**64", (64, [0], [128], [SPACE - 64], [0])),
    ("granule 0", (0, [0], [64], [0], [0])),
    ("granule 3", (3, [0], [3], [0], [0])),
])
def test_from_bytes_checksummed_but_invalid(what, args):
    data = craft(*args)
    RefMap_err = None
    try:
        RefMap.from_bytes(data)
    except CorruptDataError as e:
        RefMap_err = e
    assert RefMap_err is not None
    with pytest.raises(CorruptDataError):
        ExtentMap.from_bytes(data)


def test_from_bytes_valid_crafted_input():
    data = craft(64, [128, 0], [64, 64], [7 * 64, 9 * 64], [5, 6])   # unsorted is fine
    m = ExtentMap.from_bytes(data)
    assert extents(m) == [(0, 64, 576, 6), (128, 64, 448, 5)]


@pytest.mark.parametrize("arg", ["DCDMAPEM", 12, None, [1, 2, 3], 3.0, object()])
def test_from_bytes_non_bytes(arg):
    with pytest.raises(InputTypeError) as info:
        ExtentMap.from_bytes(arg)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle(protocol):
    rng = np.random.default_rng(protocol)
    m = ExtentMap.from_arrays(*random_layout(rng, 1000, granule=4096), granule=4096, leaf_capacity=8)
    back = pickle.loads(pickle.dumps(m, protocol=protocol))
    assert type(back) is ExtentMap and back == m and back is not m
    assert back.granule == 4096
    back.check_invariants()
    back.remove(int(m[0].start), 4096)
    assert back != m and len(m) == 1000
    assert pickle.loads(pickle.dumps(ExtentMap(1), protocol=protocol)).granule == 1


def test_copy_is_independent():
    m = populated()
    for c in (m.copy(), copy.copy(m), copy.deepcopy(m)):
        assert c == m and c is not m and c.leaf_capacity == m.leaf_capacity
        c.insert(64 * 5000, 64)
        c.remove(0, 64)
        assert c != m
    assert m.lookup(0) is not None and m.lookup(64 * 5000) is None
    m.check_invariants()


def test_equality():
    a = populated(cap=4)
    b = ExtentMap.from_arrays(*a.to_arrays(), leaf_capacity=256)
    assert a == b and not (a != b)                    # leaf capacity is not part of equality
    assert a != ExtentMap.from_arrays(*a.to_arrays(), granule=1)      # granule is
    for change in (lambda m: m.insert(64 * 9999, 64), lambda m: m.remove(0, 64)):
        c = b.copy()
        change(c)
        assert a != c
    t = a.to_arrays()
    assert a != ExtentMap.from_arrays(t.starts, t.lengths, t.targets + np.uint64(64), t.labels)
    assert a != ExtentMap.from_arrays(t.starts, t.lengths, t.targets, t.labels + np.uint32(1))
    assert (a == 5) is False and a != "map"
    with pytest.raises(TypeError):
        hash(a)


# ----------------------------------------------------------------------------- iteration under mutation

MUTATIONS = [
    ("insert", lambda m: m.insert(64 * 9000, 64)),
    ("remove", lambda m: m.remove(0, 64)),
    ("coalesce", lambda m: m.coalesce()),       # (the test gives it something to merge)
    ("clear", lambda m: m.clear()),
    ("insert_many", lambda m: m.insert_many([64 * 9000], [64])),
    ("remove_many", lambda m: m.remove_many([0], [64 * 50])),
]


@pytest.mark.parametrize("name, mutate", MUTATIONS, ids=[x[0] for x in MUTATIONS])
def test_iteration_while_mutating(name, mutate):
    m = populated()
    m.insert(128, 64, target=64000 + 128)        # continues the first extent
    it = iter(m)
    assert next(it) == m[0]
    mutate(m)
    with pytest.raises(ConcurrentModificationError) as info:
        next(it)
    assert isinstance(info.value, RuntimeError)
    m.check_invariants()
    assert list(m) == [m[i] for i in range(len(m))]      # a new iterator is fine


def test_iteration_with_mutation_in_the_loop_body():
    m = populated()
    with pytest.raises(ConcurrentModificationError):
        for e in m:
            m.remove(e.start, 64)
    m.check_invariants()


def test_reads_during_iteration_are_fine():
    m = populated()
    out = []
    for e in m:
        assert m.translate(e.start) == e.target
        m.translate_many([e.start])
        m.lookup_many([e.start])
        m.to_arrays()
        m.copy()
        out.append(e)
    assert out == [m[i] for i in range(len(m))]


# ----------------------------------------------------------------------------- lookup_many and m[i]

@pytest.mark.parametrize("cap", [4, 7, 256])
def test_lookup_many_index_is_m_i(cap):
    rng = np.random.default_rng(cap)
    layout = random_layout(rng, 3000)
    m = ExtentMap.from_arrays(*layout, leaf_capacity=cap)
    n = len(m)
    idx = np.arange(n)
    for q in (layout[0], layout[0] + layout[1] - np.uint64(1)):
        assert m.lookup_many(q).tolist() == idx.tolist()
        perm = rng.permutation(n)
        assert m.lookup_many(q[perm]).tolist() == perm.tolist()      # unsorted, sort path
    for i in rng.integers(0, n, 200).tolist():
        e = m[i]
        assert tuple(e) == (int(layout[0][i]), int(layout[1][i]), int(layout[2][i]), int(layout[3][i]))
        assert m[i - n] == e
        assert m.lookup_many([e.start + e.length - 1]).tolist() == [i]
    # after mutations (the prefix counts must follow)
    m.remove(int(layout[0][10]), int(layout[1][10]))
    m.insert(int(layout[0][-1]) + (1 << 20), 64)
    q = np.array([e.start for e in m], dtype=np.uint64)
    assert m.lookup_many(q[::-1]).tolist() == list(range(len(m)))[::-1]
    assert [m[i].start for i in range(len(m))] == q.tolist()


# ----------------------------------------------------------------------------- big cross-checks

@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(2024)
    layout = random_layout(rng, 10_000)
    return layout, build(layout, 64, 256), build(layout, 64, 8)


def big_queries(rng, layout, size, mapped_only=False):
    s, n = layout[0], layout[1]
    k = rng.integers(0, len(s), size)
    inside = s[k] + (rng.integers(0, 1 << 20, size).astype(np.uint64) % n[k])
    if mapped_only:
        return inside
    lo, hi = int(s[0]) - 4096, int(s[-1] + n[-1]) + 4096
    anywhere = rng.integers(lo, hi, size).astype(np.uint64)
    edges = np.array([0, TOP, lo, hi], dtype=np.uint64)
    return np.concatenate([edges, inside[: size // 2], anywhere])[:size]


@pytest.mark.parametrize("size", [5, 100, 511, 512, 513, 5000, 40_000])
@pytest.mark.parametrize("order", ["shuffled", "sorted", "reversed"])
def test_big_batch_queries_against_reference(big, size, order):
    layout, (m, ref), (m8, _) = big
    rng = np.random.default_rng(size)
    q = big_queries(rng, layout, size)
    rng.shuffle(q)
    if order == "sorted":
        q.sort()
    elif order == "reversed":
        q = np.sort(q)[::-1]
    exp_t = ref.translate_many(q, missing=TOP).tolist()
    exp_l = ref.lookup_many(q).tolist()
    exp_c = ref.contains_many(q).tolist()
    for mm in (m, m8):
        assert mm.translate_many(q, missing=TOP).tolist() == exp_t
        assert mm.lookup_many(q).tolist() == exp_l
        assert mm.contains_many(q).tolist() == exp_c
    mq = big_queries(rng, layout, size, mapped_only=True)
    rng.shuffle(mq)
    assert m.translate_many(mq).tolist() == ref.translate_many(mq).tolist()
    assert m8.translate_many(mq).tolist() == ref.translate_many(mq).tolist()


@pytest.mark.parametrize("size", [10, 600, 20_000])
def test_unmapped_error_names_the_first_in_caller_order(big, size):
    layout, (m, ref), (m8, _) = big
    rng = np.random.default_rng(size + 1)
    q = big_queries(rng, layout, size, mapped_only=True)
    holes = (layout[0][1:] - np.uint64(1))[layout[0][1:] - np.uint64(1) >= (layout[0] + layout[1])[:-1]]
    bad_at = sorted(rng.choice(size, size=3, replace=False).tolist())
    # the first unmapped (in caller order) has the *largest* address, so a sorted walk
    # would meet the others first
    q[bad_at[0]] = holes[-1]
    q[bad_at[1]] = holes[0]
    q[bad_at[2]] = holes[len(holes) // 2]
    for mm in (m, m8):
        with pytest.raises(UnmappedError) as info:
            mm.translate_many(q)
        assert f"addrs[{bad_at[0]}]" in str(info.value)
        assert hex(int(holes[-1])) in str(info.value)
    with pytest.raises(UnmappedError) as info:
        ref.translate_many(q)
    assert f"addrs[{bad_at[0]}]" in str(info.value)


def test_big_scalar_queries_and_structure(big):
    layout, (m, ref), (m8, _) = big
    rng = np.random.default_rng(3)
    for mm in (m, m8):
        mm.check_invariants()
        assert mm == m and len(mm) == 10_000
    for a in big_queries(rng, layout, 300).tolist():
        exp = ref.lookup(a)
        assert m.lookup(a) == exp and m8.lookup(a) == exp
    lo, hi = int(layout[0][0]), int(layout[0][-1] + layout[1][-1])
    for _ in range(50):
        s = int(rng.integers(lo, hi)) // 64 * 64
        n = int(rng.integers(1, 200)) * 64
        exp = [tuple(e) for e in ref.overlapping(s, n)]
        for mm in (m, m8):
            got = mm.overlapping(s, n)
            assert list(zip(*(a.tolist() for a in got))) == exp
        a, b = sorted(int(x) for x in rng.integers(lo - 1000, hi + 1000, 2))
        g = m8.gaps(a, b + 1)
        assert list(zip(g.starts.tolist(), g.lengths.tolist())) == ref.gaps(a, b + 1)
        ln = int(rng.integers(1, 6)) * 64
        al = 64 << int(rng.integers(0, 4))
        assert m8.find_free(ln, align=al, lo=a) == ref.find_free(ln, align=al, lo=a)
        assert m.find_free(ln, align=al, lo=a, hi=b + 1) == ref.find_free(ln, align=al, lo=a, hi=b + 1)
    assert list(zip(*(x.tolist() for x in m8.gaps(lo, hi)))) == ref.gaps(lo, hi)


@pytest.mark.parametrize("cap", [8, 256])
def test_coalesce_big_against_reference(cap):
    rng = np.random.default_rng(cap)
    s, n, t, b = random_layout(rng, 20_000, touch=0.7)
    # make many neighbours continue each other: targets = starts, labels in {0, 1}
    t = s.copy()
    b = (rng.random(len(s)) < 0.2).astype(np.uint32)
    m, ref = build((s, n, t, b), 64, cap)
    assert m.coalesce() == ref.coalesce()
    same_as_ref(m, ref)
    assert m.coalesce() == 0
    q = big_queries(rng, (s, n), 3000)
    assert m.translate_many(q, missing=1).tolist() == ref.translate_many(q, missing=1).tolist()
    assert m.lookup_many(q).tolist() == ref.lookup_many(q).tolist()


@pytest.mark.parametrize("cap", [4, 16, 256])
@pytest.mark.parametrize("batch", [1, 50, 600, 1500, 10_000])
def test_insert_many_into_a_non_empty_map(cap, batch):
    """A batch of at least 1/16 of the map takes the merge-and-rebuild path, a smaller one
    is inserted one by one; both must agree with the reference, in any input order."""
    rng = np.random.default_rng(cap * 100_003 + batch)
    s, n, t, b = random_layout(rng, 2 * 10_000, base=1 << 36)
    pick = rng.permutation(len(s))
    old, new = np.sort(pick[:10_000]), pick[10_000:10_000 + batch]     # new: unsorted
    m, ref = build((s[old], n[old], t[old], b[old]), 64, cap)
    m.insert_many(s[new], n[new], t[new], b[new])
    ref.insert_many(s[new].tolist(), n[new].tolist(), t[new].tolist(), b[new].tolist())
    same_as_ref(m, ref)
    q = big_queries(rng, (s, n), 2000)
    assert m.translate_many(q, missing=0).tolist() == ref.translate_many(q, missing=0).tolist()
    assert m.lookup_many(q).tolist() == ref.lookup_many(q).tolist()
    # default targets and labels, sorted input, at the top of the space
    # ... the last one ending exactly at 2**64
    top = np.uint64(SPACE - 128 * batch + 64) + np.arange(batch, dtype=np.uint64) * np.uint64(128)
    m.insert_many(top, np.full(len(top), 64, np.uint64))
    ref.insert_many(top.tolist(), [64] * len(top))
    same_as_ref(m, ref)
    assert m.translate(TOP) == TOP


@pytest.mark.parametrize("cap", [4, 256])
def test_insert_many_all_or_nothing_on_big_batches(cap):
    rng = np.random.default_rng(cap)
    s, n, t, b = random_layout(rng, 20_000)
    m, ref = build((s[::2], n[::2], t[::2], b[::2]), 64, cap)
    before = m.copy()
    for new in ([1, 3, 5], np.arange(1, 20_000, 2)):          # small and large batches
        ns, nl = s[new].copy(), n[new].copy()
        ns[-1] = s[0]                                            # the last one overlaps the map
        with pytest.raises(OverlapError):
            m.insert_many(ns, nl)
        assert m == before
        ns, nl = s[new].copy(), n[new].copy()
        nl[len(nl) // 2] += np.uint64(32)                        # one is misaligned
        with pytest.raises(AlignmentError):
            m.insert_many(ns[::-1], nl[::-1])
        assert m == before
    m.check_invariants()


@pytest.mark.parametrize("n", [1, 100, 5000])
def test_from_arrays_any_order(n):
    rng = np.random.default_rng(n)
    layout = random_layout(rng, n)
    perm = rng.permutation(n)
    a = ExtentMap.from_arrays(*layout, leaf_capacity=4)
    b = ExtentMap.from_arrays(*(x[perm] for x in layout), leaf_capacity=4)
    c = ExtentMap.from_arrays(*(x[perm].tolist() for x in layout), leaf_capacity=4)
    assert a == b == c
    for mm in (a, b, c):
        mm.check_invariants()
        for x, y in zip(mm.to_arrays(), layout):
            assert np.array_equal(x, y)
    d = ExtentMap.from_arrays(layout[0][perm], layout[1][perm])      # default targets, labels
    assert d.to_arrays().targets.tolist() == layout[0].tolist()
    assert d.to_arrays().labels.tolist() == [0] * n


def test_to_arrays_own_their_memory():
    m = populated()
    a = m.to_arrays()
    for x in a:
        assert x.flags.owndata or x.base is None or isinstance(x.base, np.ndarray)
        assert x.flags.writeable and x.flags.c_contiguous
    a.starts[:] = 0
    a.lengths[:] = 0
    assert m.to_arrays().starts.tolist() != a.starts.tolist()
    m.check_invariants()
    b = m.to_arrays()
    kept = [x.copy() for x in b]
    del m                                        # the arrays outlive the map
    for x, y in zip(b, kept):
        assert np.array_equal(x, y)


# ----------------------------------------------------------------------------- input types

def test_bools_bytes_and_nested_lists_are_refused_everywhere():
    """A bool is not an address (scalar or in a list); bytes are not a list of addresses; a
    nested list is not one-dimensional.  Each is refused with the matching dcdmap error."""
    m = populated()
    before = m.to_arrays()
    with pytest.raises(InputTypeError):
        m.lookup(True)
    with pytest.raises(InputTypeError):
        m.insert(False, 64)
    with pytest.raises(InputTypeError):
        m.translate_many([0, True])
    with pytest.raises(InputTypeError):
        m.translate_many(b"\x00\x01")
    with pytest.raises(InputTypeError):
        m.contains_many(bytearray(8))
    with pytest.raises(ArrayShapeError):
        m.translate_many([[0, 64], [128, 192]])
    with pytest.raises(ArrayShapeError):
        m.insert_many([[8000 * 64]], [[64]])
    assert all(np.array_equal(x, y) for x, y in zip(m.to_arrays(), before))


def test_leaf_capacity_must_be_an_int():
    with pytest.raises(InputTypeError):
        ExtentMap(leaf_capacity=8.0)
    with pytest.raises(InputTypeError):
        ExtentMap(leaf_capacity=True)
    with pytest.raises(InvalidRangeError):
        ExtentMap(leaf_capacity=3)


def test_pickle_keeps_the_leaf_capacity():
    m = populated(cap=5)
    back = pickle.loads(pickle.dumps(m))
    assert back == m and back.leaf_capacity == 5
    back.check_invariants()


# ----------------------------------------------------------------------------- classify_many, labels_many

def test_classify_many_kinds_and_top_of_space():
    m = ExtentMap()
    m.insert(0, 0x100, label=1)
    m.insert(0x100, 0x100, label=2)
    m.insert(2**64 - 0x80, 0x80, label=3)
    got = m.classify_many([0x40, 0x80, 0x200, 0x1c0, 0, 2**64 - 0x80, 2**64 - 0x100, 2**64 - 0x40],
                          [0x40, 0x100, 0x40, 0x80, 0x200, 0x80, 0x100, 0x40])
    assert got.dtype == np.uint8
    assert got.tolist() == [m.WITHIN, m.COVERED, m.FREE, m.PARTIAL, m.COVERED, m.WITHIN, m.PARTIAL, m.WITHIN]
    assert (m.FREE, m.WITHIN, m.COVERED, m.PARTIAL) == (0, 1, 2, 3)
    assert m.labels_many([0, 0x100, 0x200, 2**64 - 1]).tolist() == [1, 2, -1, 3]
    assert ExtentMap().classify_many([], []).tolist() == []


@pytest.mark.parametrize("starts, lengths, err", [
    ([0], [0], InvalidRangeError),
    ([32], [64], AlignmentError),
    ([0], [96], AlignmentError),
    ([2**64 - 64], [128], InvalidRangeError),
    ([0, 64], [64], ArrayShapeError),
    ([-64], [64], InvalidRangeError),
])
def test_classify_many_refuses_bad_ranges(starts, lengths, err):
    m = populated()
    before = m.to_bytes()
    with pytest.raises(err):
        m.classify_many(starts, lengths)
    assert m.to_bytes() == before
