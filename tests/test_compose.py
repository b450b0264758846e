"""compose, Chain and translate_chain against the reference (apply the maps in turn, per address).

Random chains of 1-4 maps live on a small address space (a few dozen granules, targets inside
it, so that stages meet each other's extents, holes and boundaries); every granule of the
space (first and last byte) is checked.  Batches of fewer and of more than 512 addresses take
both of Chain.translate_many's paths (as given, and sorted first for locality).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from dcdmap import Chain, ExtentMap, compose, translate_chain
from dcdmap.errors import (
    ArrayShapeError, ConcurrentModificationError, InputTypeError, InvalidRangeError, UnmappedError,
)
from reference_views import PlainMap, chain_translate, compose_granule, compose_hole, compose_pieces

G = 64
NG = 40                       # granules in the space
SPACE_BYTES = NG * G
U64_MAX = 2**64 - 1


@st.composite
def maps(draw, g=G, ng=NG, target_step=None, base=0):
    """A random map on [base, base + ng*g): disjoint extents (some touching), targets anywhere
    in the space (multiples of target_step, default g), small labels."""
    target_step = target_step or g
    cuts = sorted(draw(st.sets(st.integers(1, ng - 1), max_size=12))) if ng > 1 else []
    bounds = [0] + cuts + [ng]
    extents = []
    for a, b in zip(bounds, bounds[1:]):
        if draw(st.integers(0, 3)) == 0:       # a hole
            continue
        ln = (b - a) * g
        t = draw(st.integers(0, (ng * g - ln) // target_step)) * target_step
        extents.append((base + a * g, ln, base + t, draw(st.integers(0, 5))))
    cap = draw(st.sampled_from([4, 5, 256]))
    order = draw(st.permutations(range(len(extents))))
    ex = [extents[i] for i in order]
    if ex:
        s, ln, t, lab = (list(c) for c in zip(*ex))
        m = ExtentMap.from_arrays(s, ln, t, lab, granule=g, leaf_capacity=cap)
    else:
        m = ExtentMap(g, leaf_capacity=cap)
    return m


def plain(ms):
    return [PlainMap.of(m) for m in ms]


def points(g=G, ng=NG, base=0, step=None):
    step = step or g
    return list(range(base, base + ng * g, step))


def probe_addrs(g=G, ng=NG, base=0):
    """Every granule's first and last byte, plus addresses outside the space."""
    out = []
    for x in range(base, base + ng * g, g):
        out += [x, x + g - 1]
    return out + [base + ng * g, base + ng * g + 5 * g, U64_MAX]


# ============================================================================= compose

@given(st.integers(1, 4).flatmap(lambda n: st.lists(maps(), min_size=n, max_size=n)))
def test_compose_matches_reference(ms):
    ref = plain(ms)
    c = compose(*ms)
    c.check_invariants()
    got = [tuple(e) for e in c]
    exp = compose_pieces(ref, points(), G)
    note(f"maps: {[[tuple(e) for e in m] for m in ms]}")
    assert got == exp
    for x in probe_addrs():
        y, _ = chain_translate(ref, x)
        if y is None:
            assert x not in c
        else:
            assert c.translate(x) == y
            assert c.lookup(x).label == ref[0].label(x)      # labels come from the first map
    assert c.granule == compose_granule(ref, [m.granule for m in ms], points(), G)
    assert c.leaf_capacity == ms[0].leaf_capacity
    # the maps are not changed, and the result is new
    for m, r in zip(ms, ref):
        assert sorted(tuple(e) for e in m) == sorted(r.extents)
    if len(ms) == 1:
        assert c == ms[0] and c is not ms[0]


@given(st.integers(2, 4).flatmap(lambda n: st.lists(maps(), min_size=n, max_size=n)))
def test_compose_strict(ms):
    ref = plain(ms)
    hole = compose_hole(ref, points())
    if hole is None:
        assert [tuple(e) for e in compose(*ms, strict=True)] == [tuple(e) for e in compose(*ms)]
    else:
        k, y = hole
        with pytest.raises(UnmappedError) as e:
            compose(*ms, strict=True)
        assert str(e.value) == f"stage {k} does not map {y:#x}, in the image of stage {k - 1}"


@given(maps(), maps(g=16, ng=160, target_step=16), maps(g=4096, ng=1, target_step=4096))
def test_compose_granule_of_the_result(a, b, c):
    """Granules 64, 16 and 4096 on one space of 2560 bytes: the result's granule is the
    smallest input granule, lower when a piece is finer, and every piece fits it."""
    ref = plain([a, b, c])
    pts = points(g=16, ng=160)
    for ms in ([a, b], [b, a], [a, b, c], [c, a], [a, c, b]):
        r = [ref[[a, b, c].index(m)] for m in ms]
        got = compose(*ms)
        assert got.granule == compose_granule(r, [m.granule for m in ms], pts, 16)
        assert [tuple(e) for e in got] == compose_pieces(r, pts, 16)
        for e in got:
            assert e.start % got.granule == 0 and e.length % got.granule == 0


def test_compose_granule_lowered_by_targets():
    va = ExtentMap(4096)
    va.insert(0, 0x2000, target=0x10040, label=4)
    gpa = ExtentMap(4096)
    gpa.insert(0x10000, 0x1000)
    gpa.insert(0x11000, 0x1000, target=0x50000)
    c = compose(va, gpa)
    assert c.granule == 0x40
    assert [tuple(e) for e in c] == [(0, 0xfc0, 0x10040, 4), (0xfc0, 0x1000, 0x50000, 4)]
    with pytest.raises(UnmappedError, match=r"stage 1 does not map 0x12000, in the image of stage 0"):
        compose(va, gpa, strict=True)


def test_compose_docstring_and_edges():
    va = ExtentMap()
    va.insert(0, 0x2000, target=0x10000, label=1)
    gpa = ExtentMap()
    gpa.insert(0x10000, 0x1000, target=0x80000)
    gpa.insert(0x11000, 0x1000, target=0x40000)
    assert [tuple(e) for e in compose(va, gpa)] == [(0, 4096, 524288, 1), (4096, 4096, 262144, 1)]
    assert len(compose(va, ExtentMap())) == 0
    assert len(compose(ExtentMap(), gpa)) == 0
    with pytest.raises(UnmappedError, match=r"stage 1 does not map 0x10000"):
        compose(va, ExtentMap(), strict=True)
    assert len(compose(ExtentMap(), ExtentMap(), strict=True)) == 0
    # at the top of the address space
    top = ExtentMap()
    top.insert(2**64 - 0x1000, 0x1000, target=0)
    back = ExtentMap()
    back.insert(0, 0x1000, target=2**64 - 0x1000)
    assert [tuple(e) for e in compose(top, back)] == [(2**64 - 0x1000, 0x1000, 2**64 - 0x1000, 0)]
    assert compose(top, back, top).translate(U64_MAX) == 0xfff


def test_compose_bad_arguments():
    with pytest.raises(InvalidRangeError, match="at least one map"):
        compose()
    with pytest.raises(InputTypeError, match="stage 1 is a int, not an ExtentMap"):
        compose(ExtentMap(), 3)
    with pytest.raises(InputTypeError, match="stage 0 is a dict"):
        compose({}, ExtentMap())
    with pytest.raises(TypeError):
        compose([ExtentMap()])            # maps are given one by one, not as a list


# ============================================================================= Chain

def check_batch(ms, ref, addrs, missing):
    cache = {}
    for a in addrs:
        if a not in cache:
            cache[a] = chain_translate(ref, a)
    exp = [cache[a] for a in addrs]
    if missing is not None:
        want = [missing if y is None else y for y, _ in exp]
        got = Chain(ms).translate_many(addrs, missing=missing)
        assert got.dtype == np.uint64 and got.tolist() == want
        assert translate_chain(ms, addrs, missing).tolist() == want
        assert translate_chain(ms, np.array(addrs, np.uint64), missing=missing).tolist() == want
        return
    bad = next((i for i, (y, _) in enumerate(exp) if y is None), None)
    if bad is None:
        want = [y for y, _ in exp]
        assert Chain(ms).translate_many(addrs).tolist() == want
        assert translate_chain(ms, addrs).tolist() == want
    else:
        msg = f"addrs[{bad}] = {addrs[bad]:#x}: stage {exp[bad][1]} has no extent for its image"
        for call in (lambda: Chain(ms).translate_many(addrs), lambda: translate_chain(ms, addrs)):
            with pytest.raises(UnmappedError) as e:
                call()
            assert str(e.value) == msg


@st.composite
def batches(draw, small):
    pool = probe_addrs()
    if small:
        return draw(st.lists(st.sampled_from(pool), max_size=60))
    n = draw(st.integers(513, 1500))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    addrs = [pool[i] for i in rng.integers(0, len(pool), n)]
    # random bytes too, and sometimes sorted (the path that skips the sort)
    addrs += [int(x) for x in rng.integers(0, SPACE_BYTES, n // 4)]
    if draw(st.booleans()):
        addrs.sort()
    return addrs


@given(st.integers(1, 4).flatmap(lambda n: st.lists(maps(), min_size=n, max_size=n)),
       st.booleans().flatmap(lambda small: batches(small)),
       st.sampled_from([None, None, 0, U64_MAX, 12345]))
def test_chain_matches_reference(ms, addrs, missing):
    ref = plain(ms)
    chain = Chain(ms)
    assert len(chain) == len(ms)
    assert chain.maps == tuple(ms) and all(a is b for a, b in zip(chain.maps, ms))
    for x in probe_addrs()[::3]:
        y, stage = chain_translate(ref, x)
        if y is None:
            with pytest.raises(UnmappedError) as e:
                chain.translate(x)
            assert str(e.value) == f"address {x:#x}: stage {stage} has no extent for its image"
        else:
            assert chain.translate(x) == y
    check_batch(ms, ref, addrs, missing)
    assert chain.compose() == compose(*ms)


@given(st.integers(2, 4).flatmap(lambda n: st.lists(maps(), min_size=n, max_size=n)),
       st.integers(0, 2**32 - 1))
def test_chain_first_unmapped_in_callers_order(ms, seed):
    """Unmapped addresses spread over a large unsorted batch: the error names the first in
    the caller's order (not in the sorted order the batch runs in) and its stage."""
    ref = plain(ms)
    rng = np.random.default_rng(seed)
    pool = probe_addrs()
    addrs = [pool[i] for i in rng.integers(0, len(pool), 2000)]
    addrs[::-1] = addrs                        # descending runs make the sort matter
    check_batch(ms, ref, addrs, None)
    check_batch(ms, ref, addrs[:100], None)
    check_batch(ms, ref, addrs, U64_MAX)


def test_chain_docstring():
    va = ExtentMap()
    va.insert(0, 0x2000, target=0x10000)
    gpa = ExtentMap()
    gpa.insert(0x10000, 0x2000, target=0x80000)
    c = Chain([va, gpa])
    assert c.translate(0x40) == 0x80040
    assert c.translate_many([0x40, 0x1000]).tolist() == [524352, 528384]


def test_chain_stages_named():
    a = ExtentMap()
    a.insert(0, 0x2000, target=0x10000, label=3)
    b = ExtentMap()
    b.insert(0x10000, 0x1000, target=0x80000)
    c = ExtentMap()
    c.insert(0x80000, 0x400, target=0)
    ch = Chain([a, b, c])
    assert ch.translate(0x10) == 0x10
    with pytest.raises(UnmappedError, match=r"^address 0x800: stage 2 has no extent for its image$"):
        ch.translate(0x800)
    with pytest.raises(UnmappedError, match=r"address 0x1800: stage 1"):
        ch.translate(0x1800)
    with pytest.raises(UnmappedError, match=r"address 0x3000: stage 0"):
        ch.translate(0x3000)
    with pytest.raises(UnmappedError, match=r"^addrs\[1\] = 0x1800: stage 1 has no extent for its image$"):
        ch.translate_many([0x10, 0x1800, 0x800])
    assert ch.translate_many([0x10, 0x1800, 0x800], missing=1).tolist() == [0x10, 1, 1]
    ro = np.array([0x10, 0x20], np.uint64)
    ro.flags.writeable = False
    assert ch.translate_many(ro).tolist() == [0x10, 0x20]
    assert ch.translate_many([]).tolist() == []
    assert ch.translate_many(np.empty(0, np.int64), missing=3).tolist() == []


def test_chain_sees_later_changes():
    a = ExtentMap()
    a.insert(0, 0x1000, target=0x10000)
    b = ExtentMap()
    ch = Chain([a, b])
    with pytest.raises(UnmappedError, match="stage 1"):
        ch.translate(0)
    b.insert(0x10000, 0x1000, target=0x70000)
    assert ch.translate(0x40) == 0x70040
    assert ch.translate_many([0x40] * 600 + [0]).tolist()[-1] == 0x70000
    a.remove(0, 0x1000)
    with pytest.raises(UnmappedError, match="stage 0"):
        ch.translate(0x40)


def test_chain_single_stage_and_repeated_map():
    a = ExtentMap()
    a.insert(0, 0x1000, target=0x1000)
    a.insert(0x1000, 0x1000, target=0x3000)
    assert Chain([a]).translate(0x40) == 0x1040
    ch = Chain([a, a])                       # 0x40 -> 0x1040 -> 0x3040 (unmapped)
    with pytest.raises(UnmappedError, match="stage 1"):
        ch.translate(0x1040)
    assert ch.translate(0x40) == 0x3040
    addrs = list(range(0, 0x2000, 0x40)) * 5
    exp = [chain_translate(plain([a, a]), x)[0] for x in addrs]
    assert ch.translate_many(addrs, missing=U64_MAX).tolist() == [U64_MAX if y is None else y for y in exp]


def test_chain_at_the_top():
    a = ExtentMap()
    a.insert(2**64 - 0x2000, 0x2000, target=0)
    b = ExtentMap()
    b.insert(0, 0x2000, target=2**64 - 0x2000)
    ch = Chain([a, b, a])
    assert ch.translate(U64_MAX) == 0x1fff
    addrs = [U64_MAX - k * 64 for k in range(700)]
    exp = [chain_translate(plain([a, b, a]), x)[0] for x in addrs]
    assert ch.translate_many(addrs, missing=7).tolist() == [7 if y is None else y for y in exp]


def test_chain_bad_arguments():
    a = ExtentMap()
    a.insert(0, 0x1000)
    with pytest.raises(InvalidRangeError, match="at least one map"):
        Chain([])
    with pytest.raises(InputTypeError, match="stage 1 is a NoneType, not an ExtentMap"):
        Chain([a, None])
    ch = Chain([a])
    with pytest.raises(InvalidRangeError, match="address -1 is negative"):
        ch.translate(-1)
    with pytest.raises(InputTypeError):
        ch.translate(1.5)
    with pytest.raises(ArrayShapeError):
        ch.translate_many(np.zeros((2, 2), np.uint64))
    with pytest.raises(InputTypeError):
        ch.translate_many([1.0])
    with pytest.raises(InvalidRangeError, match="missing"):
        ch.translate_many([0], missing=-1)
    with pytest.raises(InvalidRangeError, match=r"addrs\[1\] = -64 is negative"):
        ch.translate_many([0, -64])
    with pytest.raises(InvalidRangeError):
        translate_chain([], [0])


def test_chain_of_a_non_iterable_is_a_dcdmap_error():
    # errors.py: every error dcdmap raises derives from DcdmapError (here InputTypeError, a
    # TypeError), like compose's "stage k is a ..., not an ExtentMap".
    with pytest.raises(InputTypeError):
        Chain(5)
    with pytest.raises(InputTypeError):
        translate_chain(None, [0])


def test_concurrent_mutation_during_a_chain_batch():
    """A map of the chain mutated while a batch runs without the GIL: the mutation raises
    ConcurrentModificationError (the batch's result stays right)."""
    a = ExtentMap()
    a.insert(0, 1 << 30, target=1 << 32)
    b = ExtentMap()
    b.insert(1 << 32, 1 << 30, target=1 << 40)
    ch = Chain([a, b])
    rng = np.random.default_rng(1)
    addrs = rng.integers(0, 1 << 30, 3_000_000, dtype=np.uint64)
    out = {}

    def run():
        out["r"] = ch.translate_many(addrs)

    refused = 0
    inserted = False
    t = threading.Thread(target=run)
    t.start()
    while t.is_alive():
        try:                                   # an unrelated range: the result cannot change
            if inserted:
                b.remove(1 << 50, 0x1000)
            else:
                b.insert(1 << 50, 0x1000)
            inserted = not inserted
        except ConcurrentModificationError:
            refused += 1
    t.join()
    if inserted:
        b.remove(1 << 50, 0x1000)
    assert np.array_equal(out["r"], addrs + np.uint64((1 << 40)))
    assert (1 << 50) not in b
    if refused == 0:
        pytest.skip("the batch never overlapped a mutation attempt on this machine")
