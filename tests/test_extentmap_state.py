"""The engine against the reference model, driven by a Hypothesis state machine (STYLE item 11).

Every rule applies one call to both the engine (:class:`dcdmap.ExtentMap`) and the naive
model (:class:`reference.RefMap`) and compares the results, or demands that both raise
the same dcdmap error class.  After every step the engine's ``check_invariants()`` runs
and its whole state (``to_arrays``, ``len``, ``mapped_bytes``) must equal the model's, so a
failed call that left a trace, or a mutation that went wrong, is caught at once.

Leaves hold 4, 5 or 8 extents, so splits, merges and borrowing between leaves happen in
nearly every run, and the addresses live in a window of a couple of thousand granules, so
that overlaps, holes and coalescible neighbours are common.  Separate machines run with
granule 1, 64 and 4096, and with the window at the very top of the address space (its
end is exactly 2**64).
"""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dcdmap import ExtentMap
from dcdmap.errors import DcdmapError
from reference import SPACE, RefMap

LABELS = st.sampled_from([0, 0, 0, 1, 1, 7, 2**32 - 1])


def both(engine, ref, name, *args, **kwargs):
    """Call ``name`` on the engine and on the reference; demand the same error class (or
    none) and return both results."""
    try:
        got, got_err = getattr(engine, name)(*args, **kwargs), None
    except DcdmapError as e:
        got, got_err = None, e
    try:
        exp, exp_err = getattr(ref, name)(*args, **kwargs), None
    except DcdmapError as e:
        exp, exp_err = None, e
    assert type(got_err) is type(exp_err), (
        f"{name}{args}{kwargs or ''}: engine raised {got_err!r}, reference raised {exp_err!r}")
    return got, exp


def assert_same_array(got, exp, dtype):
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.ndim == 1, got
    assert got.tolist() == np.asarray(exp).tolist()


def extents_of(arrays):
    """ExtentArrays -> list of (start, length, target, label) tuples, checking dtypes."""
    for a, dt in zip(arrays, (np.uint64, np.uint64, np.uint64, np.uint32)):
        assert a.dtype == dt and a.ndim == 1
    return list(zip(*(a.tolist() for a in arrays)))


class ExtentMapMachine(RuleBasedStateMachine):
    """Shared helpers; the rules live in the class make_machine() builds."""

    GRANULE = 64
    BASE = 0
    WINDOW = 2048

    def __init__(self):
        super().__init__()
        self.m = None
        self.ref = None
        self.snapshots = []     # (an older map object, the reference state it must still hold)

    def resolve_target(self, target, start, length):
        if target is None:
            return None
        kind, v = target
        if kind == "delta":
            return start + v if isinstance(start, int) and 0 <= start + v else v
        if kind == "top":   # ends exactly at 2**64, or v bytes past it
            return max(0, SPACE - length + v) if isinstance(length, int) and length > 0 else v
        return v

    # ------------------------------------------------------------------ set-up and checks

    @initialize(cap=st.sampled_from([4, 5, 8]), prefill=st.sampled_from([0, 10, 60, 250]),
                seed=st.integers(0, 2**32 - 1))
    def init_map(self, cap, prefill, seed):
        """An empty map, or one built by from_arrays from ``prefill`` random extents (short,
        many of them touching, so that coalesce has work)."""
        self.cap = cap
        self.ref = RefMap(self.GRANULE)
        if prefill:
            rng = np.random.default_rng(seed)
            g = self.GRANULE
            ks = np.sort(rng.choice(self.WINDOW, size=min(2 * prefill, self.WINDOW), replace=False))
            picked = []
            prev_end = -1
            for k in ks.tolist():                    # disjoint runs of 1..4 granules
                if k > prev_end and len(picked) < prefill:
                    n = int(min(rng.integers(1, 5), self.WINDOW - k))
                    picked.append((self.BASE + k * g, n * g, int(rng.integers(0, 2))))
                    prev_end = k + n - 1
            starts, lengths, labels = (list(c) for c in zip(*picked))
            order = rng.permutation(len(starts))
            args = ([starts[i] for i in order], [lengths[i] for i in order], None,
                    [labels[i] for i in order])
            self.m = ExtentMap.from_arrays(*args, granule=self.GRANULE, leaf_capacity=cap)
            self.ref.insert_many(*args)
        else:
            self.m = ExtentMap(self.GRANULE, leaf_capacity=cap)
        assert self.m.granule == self.GRANULE and self.m.leaf_capacity == cap

    @invariant()
    def invariants_and_state(self):
        if self.m is None:
            return
        self.m.check_invariants()
        got = self.m.to_arrays()
        exp = self.ref.to_arrays()
        for a, b in zip(got, exp):
            assert a.dtype == b.dtype
            assert np.array_equal(a, b), f"engine {got}\nreference {exp}"
        assert len(self.m) == len(self.ref)
        assert self.m.mapped_bytes == self.ref.mapped_bytes
        for old, old_ref in self.snapshots:
            old.check_invariants()
            for a, b in zip(old.to_arrays(), old_ref.to_arrays()):
                assert np.array_equal(a, b), "an old copy changed: copies share state"

    def window_end(self):
        return self.BASE + self.WINDOW * self.GRANULE

    # ------------------------------------------------------------------ scalar mutations

    @rule()
    def coalesce(self):
        got, exp = both(self.m, self.ref, "coalesce")
        assert got == exp

    @precondition(lambda self: self.ref is not None and len(self.ref) > 150)
    @rule()
    def clear(self):
        self.m.clear()
        self.ref.clear()
        assert len(self.m) == 0 and self.m.mapped_bytes == 0

    # ------------------------------------------------------------------ scalar queries

    @rule(data=st.data())
    def gaps(self, data):
        end = self.window_end()
        lo = data.draw(st.one_of(st.integers(self.BASE, end), st.just(0), st.just(-1)), label="lo")
        hi = data.draw(st.one_of(st.integers(self.BASE, end), st.just(SPACE), st.just(SPACE + 1),
                                 st.integers(-1, 1).map(lambda d: lo + d)),     # lo >= hi: an error
                       label="hi")
        kwargs = {} if (lo, hi) == (0, SPACE) else {"lo": lo, "hi": hi}
        got, exp = both(self.m, self.ref, "gaps", **kwargs)
        if exp is not None:
            assert got.starts.dtype == np.uint64 and got.lengths.dtype == np.uint64
            assert list(zip(got.starts.tolist(), got.lengths.tolist())) == exp

    @rule(data=st.data())
    def find_free(self, data):
        g, end = self.GRANULE, self.window_end()
        length = data.draw(st.one_of(st.integers(1, 8).map(lambda k: k * g),
                                     st.integers(1, 64).map(lambda k: k * g),
                                     st.sampled_from([0, g + 1 if g > 1 else 0, SPACE - g])),
                           label="length")
        align = data.draw(st.one_of(st.none(), st.integers(0, 6).map(lambda j: g << j),
                                    st.sampled_from([3 * g, g // 2 if g > 1 else 0])), label="align")
        # lo: the default (0), anywhere in the window, or at / just before / inside an extent
        # (so that the search is blocked and has to skip extents)
        lo_kinds = ["default", "window"] + (["extent"] * 3 if self.ref.ext else [])
        kind = data.draw(st.sampled_from(lo_kinds), label="lo kind")
        if kind == "default":
            lo = None
        elif kind == "window":
            lo = data.draw(st.integers(self.BASE, end - 1), label="lo")
        else:
            i = data.draw(st.integers(0, len(self.ref.ext) - 1), label="extent")
            lo = max(0, self.ref.ext[i][0] + data.draw(st.integers(-2 * g, g), label="lo offset"))
        # hi: mostly the default (2**64), else somewhere after lo (or before it: an error)
        hi = data.draw(st.one_of(st.none(), st.none(), st.integers(self.BASE, end),
                                 st.integers(0, 2).map(lambda d: (lo or 0) + d * g)), label="hi")
        kwargs = {"align": align}
        if lo is not None:
            kwargs["lo"] = lo
        if hi is not None:
            kwargs["hi"] = hi
        got, exp = both(self.m, self.ref, "find_free", length, **kwargs)
        assert got == exp
        if got is not None:   # and it really is free
            assert not self.ref.overlapping(got, length)

    @rule(data=st.data())
    def getitem_and_iter(self, data):
        n = len(self.ref)
        i = data.draw(st.integers(-n - 1, n), label="index")
        if -n <= i < n:
            assert tuple(self.m[i]) == tuple(self.ref[i])
        else:
            with pytest.raises(IndexError):
                self.m[i]
        assert [tuple(e) for e in self.m] == [tuple(e) for e in self.ref]

    # ------------------------------------------------------------------ batch queries

    def queries(self, seed, size, mapped_only, order):
        """``size`` query addresses: first and last bytes of extents, bytes inside them, and
        (unless ``mapped_only``) random bytes of the window; sorted, reversed or shuffled."""
        rng = np.random.default_rng(seed)
        g, base, w = self.GRANULE, self.BASE, self.WINDOW
        anywhere = np.uint64(base) + rng.integers(0, w * g, size).astype(np.uint64)
        if self.ref.ext:
            starts = np.array([e[0] for e in self.ref.ext], dtype=np.uint64)
            spans = np.array([e[1] - e[0] for e in self.ref.ext], dtype=np.uint64)   # length - 1
            pick = rng.integers(0, len(starts), size)
            frac = rng.random(size)
            frac[rng.random(size) < 0.2] = 0.0          # first bytes
            frac[rng.random(size) < 0.2] = 1.0          # last bytes
            off = np.minimum((frac * spans[pick].astype(np.float64)).astype(np.uint64), spans[pick])
            inside = starts[pick] + off
            arr = inside if mapped_only else np.where(rng.random(size) < 0.75, inside, anywhere)
        else:
            arr = anywhere[:0] if mapped_only else anywhere
        arr = arr.astype(np.uint64)
        if order == "sorted":
            arr = np.sort(arr)
        elif order == "reversed":
            arr = np.sort(arr)[::-1].copy()
        return arr

    QUERY_SIZES = st.sampled_from([0, 1, 5, 64, 511, 512, 900])
    ORDERS = st.sampled_from(["sorted", "shuffled", "shuffled", "reversed"])

    @rule(seed=st.integers(0, 2**32 - 1), size=QUERY_SIZES, mapped_only=st.booleans(), order=ORDERS,
          missing=st.sampled_from([None, None, 0, 2**64 - 1, 12345]), as_list=st.booleans())
    def translate_many(self, seed, size, mapped_only, order, missing, as_list):
        q = self.queries(seed, size, mapped_only, order)
        arg = q.tolist() if as_list else q
        got, exp = both(self.m, self.ref, "translate_many", arg, missing=missing)
        if exp is not None:
            assert_same_array(got, exp, np.uint64)

    @rule(seed=st.integers(0, 2**32 - 1), size=QUERY_SIZES, order=ORDERS)
    def lookup_contains_many(self, seed, size, order):
        q = self.queries(seed, size, False, order)
        got, exp = both(self.m, self.ref, "lookup_many", q)
        assert_same_array(got, exp, np.int64)
        for i, k in zip(q.tolist()[:50], got.tolist()[:50]):   # the index is m[i]'s
            if k >= 0:
                e = self.m[k]
                assert e.start <= i < e.start + e.length
        got, exp = both(self.m, self.ref, "contains_many", q)
        assert_same_array(got, exp, np.bool_)
        got, exp = both(self.m, self.ref, "labels_many", q)
        assert_same_array(got, exp, np.int64)

    @rule(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([0, 1, 5, 40]), order=ORDERS,
          span=st.sampled_from([1, 2, 5, 40]))
    def classify_many(self, seed, size, order, span):
        """Ranges starting at query addresses, a few granules long (some past the top)."""
        q = self.queries(seed, size, False, order)
        rng = np.random.default_rng(seed)
        lengths = rng.integers(1, span + 1, len(q)).astype(np.uint64) * np.uint64(self.m.granule)
        starts = q - q % np.uint64(self.m.granule)
        got, exp = both(self.m, self.ref, "classify_many", starts, lengths)
        if exp is not None:
            assert_same_array(got, exp, np.uint8)

    # ------------------------------------------------------------------ batch mutations

    @rule(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 2, 3, 8, 30, 80]),
          spoil=st.sampled_from([None, None, None, "map", "batch", "misaligned", "zero"]),
          shuffle=st.booleans(), with_targets=st.booleans(), with_labels=st.booleans())
    def insert_many_free(self, seed, n, spoil, shuffle, with_targets, with_labels):
        """Batches placed in free space (so they succeed unless spoiled on purpose): small
        batches take the engine's one-by-one path, large ones its merge-and-rebuild path."""
        rng = np.random.default_rng(seed)
        g = self.GRANULE
        holes = [(s, ln) for s, ln in self.ref.gaps(self.BASE, self.window_end()) if ln >= g]
        rng.shuffle(holes)
        items = []
        for s, ln in holes[:n]:
            k = ln // g
            off = int(rng.integers(0, k))
            size = int(rng.integers(1, k - off + 1))
            size = min(size, 1 + int(rng.integers(0, 8)))
            target = ("delta", 0) if rng.integers(0, 2) else ("abs", int(rng.integers(0, 4096)) * g)
            items.append((s + off * g, size * g, target, int(rng.integers(0, 3))))
        if spoil == "map" and len(self.ref):
            e = self.ref.ext[int(rng.integers(0, len(self.ref)))]
            items.append((e[0], g, None, 0))
        elif spoil == "batch" and items:
            items.append(items[int(rng.integers(0, len(items)))])
        elif spoil == "misaligned" and g > 1 and items:
            s, ln, t, b = items[-1]
            items[-1] = (s, ln + g // 2, t, b)
        elif spoil == "zero" and items:
            s, ln, t, b = items[0]
            items[0] = (s, 0, t, b)
        if not shuffle:
            items.sort(key=lambda it: it[0])
        self._insert_many(items, with_targets, with_labels, as_arrays=True)

    @rule(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 2, 3, 9, 20, 40]),
          shuffle=st.booleans(), with_targets=st.booleans(), with_labels=st.booleans())
    def insert_many_after_the_end(self, seed, n, shuffle, with_targets, with_labels):
        """Batches that lie wholly after the map's last byte (the engine appends new leaves
        for those), up to the end of the window (2**64 for the top-of-space machines)."""
        rng = np.random.default_rng(seed)
        g = self.GRANULE
        cur = self.ref.ext[-1][1] + 1 if self.ref.ext else self.BASE
        cur = max(cur, self.BASE)
        end = self.window_end()
        items = []
        for _ in range(n):
            cur += int(rng.integers(0, 3)) * g          # touching or not
            size = int(rng.integers(1, 4)) * g
            if cur + size > end:
                break
            items.append((cur, size, ("delta", 0) if rng.integers(0, 2) else None, int(rng.integers(0, 2))))
            cur += size
        if shuffle:
            rng.shuffle(items)
        self._insert_many(items, with_targets, with_labels, as_arrays=True)

    def _insert_many(self, items, with_targets, with_labels, as_arrays):
        starts = [it[0] for it in items]
        lengths = [it[1] for it in items]
        targets = [self.resolve_target(it[2], it[0], it[1]) for it in items]
        targets = [it[0] if t is None else t for it, t in zip(items, targets)]
        labels = [it[3] for it in items]
        args = [starts, lengths, targets if with_targets else None, labels if with_labels else None]
        if as_arrays:
            try:
                args = [None if a is None else np.array(a, dtype=np.uint64) for a in args]
            except OverflowError:   # a value outside uint64: stay with lists
                pass
        got, exp = both(self.m, self.ref, "insert_many", *args)
        assert got is None

    # ------------------------------------------------------------------ copies and state

    def _swap_in(self, new):
        """Carry on with ``new`` (which must equal the current map); keep the old object and
        check in every later step that it never changes."""
        assert new == self.m and not (new != self.m)
        new.check_invariants()
        self.snapshots = (self.snapshots + [(self.m, self.ref.copy())])[-2:]
        self.m = new

    @rule(how=st.sampled_from(["copy", "copy.copy", "deepcopy"]))
    def copy(self, how):
        new = {"copy": lambda m: m.copy(), "copy.copy": copy.copy, "deepcopy": copy.deepcopy}[how](self.m)
        assert new is not self.m
        assert new.leaf_capacity == self.cap and new.granule == self.GRANULE
        self._swap_in(new)

    @rule(use_pickle=st.booleans())
    def bytes_round_trip(self, use_pickle):
        data = self.m.to_bytes()
        assert isinstance(data, bytes)
        assert data == self.ref.to_bytes()
        assert RefMap.from_bytes(data) == self.ref
        if use_pickle:
            new = pickle.loads(pickle.dumps(self.m))
            assert new == self.m and new.granule == self.GRANULE
            new = ExtentMap.from_arrays(*new.to_arrays(), granule=self.GRANULE, leaf_capacity=self.cap)
        else:
            new = ExtentMap.from_bytes(data, leaf_capacity=self.cap)
        assert new.granule == self.GRANULE
        self._swap_in(new)

    @rule(seed=st.integers(0, 2**32 - 1))
    def from_arrays_shuffled(self, seed):
        arrays = self.m.to_arrays()
        perm = np.random.default_rng(seed).permutation(len(arrays.starts))
        new = ExtentMap.from_arrays(*(a[perm] for a in arrays), granule=self.GRANULE,
                                    leaf_capacity=self.cap)
        self._swap_in(new)


def make_machine(name, granule, base, window=2048):
    """A state machine class for one granule and one window ``[base, base + window*granule)``."""
    g, w = granule, window

    # ------------------------------------------------------------------ strategies

    aligned = st.integers(0, w - 1).map(lambda k: base + k * g)
    # Mostly granule-aligned starts in the window; now and then a misaligned or wild one.
    starts = st.one_of(
        aligned, aligned, aligned, aligned, aligned, aligned,
        st.tuples(st.integers(0, w - 1), st.integers(1, max(1, g - 1))).map(
            lambda t: base + t[0] * g + (t[1] if g > 1 else 0)),
        st.sampled_from([-g, SPACE, SPACE - g, 0]),
    )
    # Mostly a few granules, sometimes dozens, now and then the whole window (a remove that
    # crosses hundreds of extents and many leaves), rarely bad.
    short = st.integers(1, 8).map(lambda k: k * g)
    medium = st.integers(1, 64).map(lambda k: k * g)
    long_ = st.integers(1, w).map(lambda k: k * g)
    lengths = st.one_of(short, short, short, short, medium, medium, long_,
                        st.sampled_from([0, g // 2 if g > 1 else 0, g + 1 if g > 1 else 0, -g, SPACE]))
    # Any byte of the window, or its edges.
    inside = st.integers(0, w * g - 1).map(lambda off: base + off)
    addrs = st.one_of(inside, inside, inside, st.sampled_from([0, SPACE - 1, base, base + w * g - 1]))
    # None (the start), an offset from the start (kept symbolic so that neighbours continue
    # each other and coalesce), an absolute value, or one that ends at / past 2**64.
    targets = st.one_of(
        st.none(), st.none(),
        st.sampled_from([("delta", 0), ("delta", 64 * g), ("delta", 1 << 50)]),
        st.integers(0, 4096).map(lambda k: ("abs", k * g)),
        st.sampled_from([("top", 0), ("top", 1), ("top", g)]),       # 2**64 exactly, 1 byte past, g past
    )

    class Machine(ExtentMapMachine):
        GRANULE = g
        BASE = base
        WINDOW = w

        def draw_start(self, data):
            """Half the time an address at, inside or just past an existing extent (give or
            take two granules), so that ranges really meet, cut and touch extents; else any
            start of the strategy above (mostly random, now and then bad)."""
            if self.ref.ext and data.draw(st.booleans(), label="near an extent"):
                i = data.draw(st.integers(0, len(self.ref.ext) - 1), label="extent")
                s, last = self.ref.ext[i][:2]
                where = data.draw(st.sampled_from(["start", "end", "inside"]), label="where")
                if where == "start":
                    a = s
                elif where == "end":
                    a = last + 1
                else:
                    a = s + data.draw(st.integers(0, (last - s) // g), label="granules in") * g
                return a + data.draw(st.integers(-2, 2), label="shift") * g
            return data.draw(starts, label="start")

        @rule(data=st.data(), tgt=targets, label=LABELS)   # ("target" is a reserved name)
        def insert(self, data, tgt, label):
            start, length = self.draw_start(data), data.draw(lengths, label="length")
            t = self.resolve_target(tgt, start, length)
            got, exp = both(self.m, self.ref, "insert", start, length, target=t, label=label)
            assert got is None

        @rule(start=starts, length=lengths, label=st.sampled_from([2**32, -1]))
        def insert_bad_label(self, start, length, label):
            both(self.m, self.ref, "insert", start, length, label=label)

        @rule(data=st.data())
        def remove(self, data):
            start, length = self.draw_start(data), data.draw(lengths, label="length")
            got, exp = both(self.m, self.ref, "remove", start, length)
            assert got == exp

        @rule(addr=addrs)
        def lookup_translate_contains(self, addr):
            got, exp = both(self.m, self.ref, "lookup", addr)
            assert (got is None and exp is None) or tuple(got) == tuple(exp)
            got, exp = both(self.m, self.ref, "translate", addr)
            assert got == exp
            assert (addr in self.m) == (addr in self.ref)

        @rule(data=st.data())
        def overlapping(self, data):
            start, length = self.draw_start(data), data.draw(lengths, label="length")
            got, exp = both(self.m, self.ref, "overlapping", start, length)
            if exp is not None:
                assert extents_of(got) == [tuple(e) for e in exp]

        @rule(data=st.data(), with_targets=st.booleans(), with_labels=st.booleans())
        def insert_many_random(self, data, with_targets, with_labels):
            """Arbitrary small batches: often overlapping or bad, so this mostly checks that the
            batch is refused whole with the right error."""
            n = data.draw(st.integers(0, 6), label="batch size")
            items = [(self.draw_start(data), data.draw(lengths, label="length"),
                      data.draw(targets, label="target"), data.draw(LABELS, label="label")) for _ in range(n)]
            self._insert_many(items, with_targets, with_labels, as_arrays=False)

        @rule(data=st.data(), as_arrays=st.booleans())
        def remove_many(self, data, as_arrays):
            n = data.draw(st.integers(0, 5), label="batch size")
            items = [(self.draw_start(data), data.draw(lengths, label="length")) for _ in range(n)]
            starts_ = [s for s, _ in items]
            lengths_ = [n for _, n in items]
            if as_arrays and all(0 <= v < SPACE for v in starts_ + lengths_):
                starts_, lengths_ = np.array(starts_, dtype=np.uint64), np.array(lengths_, dtype=np.uint64)
            got, exp = both(self.m, self.ref, "remove_many", starts_, lengths_)
            assert got == exp

    Machine.__name__ = Machine.__qualname__ = name
    return Machine


Granule1 = make_machine("Granule1", 1, 0)
Granule64 = make_machine("Granule64", 64, 1 << 40)
Granule4096 = make_machine("Granule4096", 4096, (1 << 52) + 7 * 4096)
TopOfSpace = make_machine("TopOfSpace", 64, SPACE - 2048 * 64)              # ends at 2**64
TopOfSpaceGranule1 = make_machine("TopOfSpaceGranule1", 1, SPACE - 2048)    # ends at 2**64

TestGranule1 = Granule1.TestCase
TestGranule64 = Granule64.TestCase
TestGranule4096 = Granule4096.TestCase
TestTopOfSpace = TopOfSpace.TestCase
TestTopOfSpaceGranule1 = TopOfSpaceGranule1.TestCase
