"""SharingIndex against a per-granule holder-mask reference, driven by a Hypothesis state machine.

Each rule applies one call (add / remove / add_many / remove_many / clear, or a bad call) to
the index and to :class:`reference_views.RefSharing`; after every step the index's
``check_invariants()`` runs and every query (holders, holders_many, held_by, coverage,
to_arrays, len) must equal the reference's.  The space is small (48 granules) and leaves hold
4 or 5 ranges, so splits and merges of leaves and of elementary ranges happen all the time.
Machines: hosts 0..63, hosts 0..2 (heavy overlap), and the window at the very top of the
address space (its end is exactly 2**64).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dcdmap import MAX_HOSTS, SharingIndex
from dcdmap.errors import (
    AlignmentError, ArrayShapeError, ConcurrentModificationError, DcdmapError, InputTypeError,
    InvalidRangeError,
)
from reference_views import RefSharing

G = 64
NG = 48
U64_MAX = 2**64 - 1


class SharingMachine(RuleBasedStateMachine):
    HOSTS = 64                 # hosts: the drawn 0..63 modulo HOSTS
    BASE = 0                   # the window [BASE, BASE + NG*G)

    def __init__(self):
        super().__init__()
        self.idx = None
        self.ref = None

    # ------------------------------------------------------------------ helpers

    def span(self, g0, n):
        """Granule g0 and up to n granules after it, clipped to the window: (start, length)."""
        n = min(n, NG - g0)
        return self.BASE + g0 * G, n * G

    def state(self):
        s, ln, m = self.idx.to_arrays()
        return s.tolist(), ln.tolist(), m.tolist(), len(self.idx)

    # ------------------------------------------------------------------ set-up and checks

    @initialize(cap=st.sampled_from([4, 5]))
    def init(self, cap):
        self.idx = SharingIndex(G, leaf_capacity=cap)
        self.ref = RefSharing(NG * G, G, base=self.BASE)
        assert self.idx.granule == G and len(self.idx) == 0

    @invariant()
    def agrees(self):
        if self.idx is None:
            return
        self.idx.check_invariants()
        starts, lengths, masks = self.idx.to_arrays()
        assert starts.dtype == lengths.dtype == masks.dtype == np.uint64
        runs = self.ref.runs()
        assert list(zip(starts.tolist(), lengths.tolist(), masks.tolist())) == runs
        assert len(self.idx) == len(runs)
        # holders at every granule (first and last byte) and just outside the window
        addrs = []
        for k in range(NG):
            a = self.BASE + k * G
            addrs += [a, a + G - 1]
        if self.BASE:
            addrs.append(self.BASE - 1)
        if self.BASE + NG * G < 2**64:
            addrs.append(self.BASE + NG * G)
        addrs.append(0 if self.BASE else U64_MAX)
        exp = [self.ref.holders(a) for a in addrs]
        got = self.idx.holders_many(addrs)
        assert got.dtype == np.uint64 and got.tolist() == exp
        assert self.idx.holders_many(addrs[::-1]).tolist() == exp[::-1]
        for a in addrs[::7]:
            assert self.idx.holders(a) == self.ref.holders(a)
        # held_by for every host that holds something, and a few that hold nothing
        held = self.ref.held_by_all()
        for h in set(held) | {0, 63}:
            r = self.idx.held_by(h)
            assert r.starts.dtype == np.uint64 and r.lengths.dtype == np.uint64
            assert list(zip(r.starts.tolist(), r.lengths.tolist())) == held.get(h, [])
        cov = self.idx.coverage()
        assert isinstance(cov, list) and len(cov) == 65
        assert cov == self.ref.coverage()

    # ------------------------------------------------------------------ mutations

    @rule(host=st.integers(0, 63), g0=st.integers(0, NG - 1), n=st.integers(1, NG))
    def add(self, host, g0, n):
        host %= self.HOSTS
        s, ln = self.span(g0, n)
        self.idx.add(host, s, ln)
        self.ref.add(host, s, ln)

    @rule(host=st.integers(0, 63), g0=st.integers(0, NG - 1), n=st.integers(1, NG))
    def remove(self, host, g0, n):
        host %= self.HOSTS
        s, ln = self.span(g0, n)
        self.idx.remove(host, s, ln)
        self.ref.remove(host, s, ln)

    @rule(items=st.lists(st.tuples(st.integers(0, 63), st.integers(0, NG - 1), st.integers(1, 12)),
                         max_size=8),
          as_arrays=st.booleans())
    def add_many(self, items, as_arrays):
        hs, ss, ls = self.batch(items)
        conv = (lambda v: np.array(v, np.uint64)) if as_arrays else list
        self.idx.add_many(conv(hs), conv(ss), conv(ls))
        for h, s, ln in zip(hs, ss, ls):
            self.ref.add(h, s, ln)

    @rule(items=st.lists(st.tuples(st.integers(0, 63), st.integers(0, NG - 1), st.integers(1, 12)),
                         max_size=8),
          as_arrays=st.booleans())
    def remove_many(self, items, as_arrays):
        hs, ss, ls = self.batch(items)
        dtype = np.int64 if self.BASE + NG * G <= 2**63 else np.uint64
        conv = (lambda v: np.array(v, dtype)) if as_arrays else list
        self.idx.remove_many(conv(hs), conv(ss), conv(ls))
        for h, s, ln in zip(hs, ss, ls):
            self.ref.remove(h, s, ln)

    def batch(self, items):
        hs, ss, ls = [], [], []
        for h, g0, n in items:
            s, ln = self.span(g0, n)
            hs.append(h % self.HOSTS)
            ss.append(s)
            ls.append(ln)
        return hs, ss, ls

    @rule(host=st.integers(0, 63))
    def add_everything_then_take_some_back(self, host):
        """One host over the whole window, then off again in the middle."""
        host %= self.HOSTS
        self.idx.add(host, self.BASE, NG * G)
        self.ref.add(host, self.BASE, NG * G)
        self.idx.remove(host, self.BASE + 8 * G, 8 * G)
        self.ref.remove(host, self.BASE + 8 * G, 8 * G)

    @precondition(lambda self: self.idx is not None and len(self.idx) > 12)
    @rule()
    def clear(self):
        self.idx.clear()
        self.ref.clear()
        assert len(self.idx) == 0

    # ------------------------------------------------------------------ errors change nothing

    @rule(kind=st.sampled_from([
        "host64", "host-1", "hostfloat", "misaligned-start", "misaligned-length", "zero",
        "past-end", "negative-start", "many-host64", "many-host-neg", "many-shape",
        "many-zero", "many-misaligned", "many-past-end", "many-2d"]),
        remove=st.booleans(), g0=st.integers(0, NG - 1))
    def bad_call(self, kind, remove, g0):
        before = self.state()
        s = self.BASE + g0 * G
        top = 2**64 - G
        one = self.idx.remove if remove else self.idx.add
        many = self.idx.remove_many if remove else self.idx.add_many
        cases = {
            "host64": (InvalidRangeError, "host 64 is not in 0..63", lambda: one(64, s, G)),
            "host-1": (InvalidRangeError, "host -1 is negative", lambda: one(-1, s, G)),
            "hostfloat": (InputTypeError, "host must be an integer", lambda: one(1.0, s, G)),
            "misaligned-start": (AlignmentError, f"start {s + 32:#x} is not a multiple of the granule 0x40",
                                 lambda: one(1, s + 32, G)),
            "misaligned-length": (AlignmentError, "length 0x60 is not a multiple of the granule 0x40",
                                  lambda: one(1, s, 96)),
            "zero": (InvalidRangeError, f"zero length at start {s:#x}", lambda: one(1, s, 0)),
            "past-end": (InvalidRangeError, "ends past 2**64", lambda: one(1, top, 2 * G)),
            "negative-start": (InvalidRangeError, "start -64 is negative", lambda: one(1, -64, G)),
            "many-host64": (InvalidRangeError, "hosts[2] = 64 is not in 0..63",
                            lambda: many([0, 1, 64], [s, s, s], [G, G, G])),
            "many-host-neg": (InvalidRangeError, "hosts[1] = -1 is negative",
                              lambda: many([0, -1], [s, s], [G, G])),
            "many-shape": (ArrayShapeError, "have 2, 2 and 1 elements",
                           lambda: many([0, 1], [s, s], [G])),
            "many-zero": (InvalidRangeError, f"extent 1 at {s:#x} has zero length",
                          lambda: many([0, 1], [s, s], [G, 0])),
            "many-misaligned": (AlignmentError, "extent 2: start",
                                lambda: many([0, 1, 2], [s, s, s + 8], [G, G, G])),
            "many-past-end": (InvalidRangeError, "extent 1: ",
                              lambda: many([3, 3], [s, top], [G, 2 * G])),
            "many-2d": (ArrayShapeError, "one-dimensional",
                        lambda: many(np.zeros((1, 1), np.uint64), [s], [G])),
        }
        err, text, call = cases[kind]
        with pytest.raises(err) as e:
            call()
        assert isinstance(e.value, DcdmapError)
        assert text in str(e.value), str(e.value)
        assert self.state() == before


class FewHostsMachine(SharingMachine):
    HOSTS = 3


class TopWindowMachine(SharingMachine):
    HOSTS = 64
    BASE = 2**64 - NG * G


TestSharingAllHosts = SharingMachine.TestCase
TestSharingFewHosts = FewHostsMachine.TestCase
TestSharingTopWindow = TopWindowMachine.TestCase


# ============================================================================= unit tests

def test_docstring_example():
    idx = SharingIndex()
    idx.add(0, 0x0000, 0x3000)
    idx.add(1, 0x1000, 0x3000)
    assert (idx.holders(0x1800), idx.holders(0x3800), idx.holders(0x9000)) == (3, 2, 0)
    assert idx.holders_many([0x0, 0x2fc0, 0x3000]).tolist() == [1, 3, 2]
    r = idx.held_by(1)
    assert r.starts.tolist() == [0x1000] and r.lengths.tolist() == [0x3000]
    assert idx.coverage()[:3] == [0, 0x2000, 0x2000]
    idx.remove(0, 0x0000, 0x3000)
    assert len(idx) == 1
    idx.check_invariants()
    assert MAX_HOSTS == 64


def test_canonical_merging():
    a = SharingIndex(leaf_capacity=4)
    for k in range(0, 0x1000, 0x40):             # granule by granule
        a.add(5, k, 0x40)
    b = SharingIndex()
    b.add(5, 0, 0x1000)
    assert len(a) == len(b) == 1
    assert [x.tolist() for x in a.to_arrays()] == [x.tolist() for x in b.to_arrays()]
    a.add(7, 0x400, 0x40)
    a.remove(7, 0x400, 0x40)                     # back to one range
    assert len(a) == 1
    a.remove(5, 0x400, 0x40)
    assert len(a) == 2 and a.holders(0x400) == 0
    a.check_invariants()


def test_all_64_hosts_and_the_top():
    idx = SharingIndex(leaf_capacity=4)
    for h in range(64):
        idx.add(h, 2**64 - 0x40 * (h + 1), 0x40 * (h + 1))
    idx.check_invariants()
    assert idx.holders(U64_MAX) == U64_MAX
    assert idx.holders(2**64 - 0x40 * 64) == 1 << 63
    cov = idx.coverage()
    assert cov[64] == 0x40 and cov[1] == 0x40 and sum(cov) == 0x40 * 64
    assert idx.held_by(63).lengths.tolist() == [0x40 * 64]
    idx.remove_many(list(range(64)), [2**64 - 0x40] * 64, [0x40] * 64)
    assert idx.holders(U64_MAX) == 0
    idx.check_invariants()


def test_coverage_counts_up_to_2_64():
    idx = SharingIndex()
    idx.add(0, 0, 2**63)
    idx.add(1, 2**63, 2**63)
    assert len(idx) == 2
    assert idx.coverage()[1] == 2**64               # the sum does not wrap to 0
    idx.add(1, 0, 2**63)
    idx.add(0, 2**63, 2**63 - 64)
    idx.add(2, 2**64 - 64, 64)
    cov = idx.coverage()
    assert cov[2] == 2**64 and cov[1] == 0 and cov[3] == 0 and cov[0] == 0
    assert idx.holders(U64_MAX) == 0b110
    idx.check_invariants()


def test_whole_address_space_held_by_one_set():
    # Two touching halves with the same holders merge into one elementary range of 2**64
    # bytes.  Queries work; the sizes must not come out as 0 (coverage must count 2**64, and
    # to_arrays / held_by must not report a zero length: split the range, or refuse).
    idx = SharingIndex()
    idx.add(0, 0, 2**63)
    idx.add(0, 2**63, 2**63)
    idx.check_invariants()
    assert idx.holders_many([0, 2**63, U64_MAX]).tolist() == [1, 1, 1]
    assert idx.coverage()[1] == 2**64
    for call in (idx.to_arrays, lambda: idx.held_by(0)):
        try:
            arrays = call()
        except DcdmapError:
            continue
        lengths = arrays[1]
        assert np.all(lengths > 0), arrays
        assert sum(int(x) for x in lengths) == 2**64, arrays


def test_granule_and_arguments():
    idx = SharingIndex(4096, leaf_capacity=5)
    assert idx.granule == 4096
    with pytest.raises(AlignmentError):
        idx.add(0, 0x40, 0x1000)
    idx.add(0, 0x1000, 0x1000)
    assert idx.holders(0x1fff) == 1
    with pytest.raises(InvalidRangeError):
        SharingIndex(48)
    with pytest.raises(InvalidRangeError):
        SharingIndex(leaf_capacity=3)
    with pytest.raises(InvalidRangeError, match="host 64 is not in 0..63"):
        idx.held_by(64)
    with pytest.raises(InvalidRangeError):
        idx.holders(-1)
    with pytest.raises(ArrayShapeError):
        idx.holders_many(np.zeros((2, 2), np.uint64))
    assert idx.holders_many([]).tolist() == []
    idx.add_many([], [], [])
    idx.remove_many(np.empty(0, np.uint64), [], [])
    assert len(idx) == 1
    assert repr(idx).startswith("SharingIndex(1 ranges")


def test_batch_all_or_nothing():
    idx = SharingIndex(leaf_capacity=4)
    idx.add(1, 0, 0x1000)
    before = [x.tolist() for x in idx.to_arrays()]
    with pytest.raises(AlignmentError):
        idx.add_many([2, 3, 4], [0, 0x100, 0x230], [0x40, 0x40, 0x40])
    with pytest.raises(InvalidRangeError):
        idx.remove_many([1, 1], [0, 0x100], [0x40, 0])
    assert [x.tolist() for x in idx.to_arrays()] == before


def test_read_only_arrays():
    h = np.array([0, 1], np.uint64)
    s = np.array([0, 0x40], np.uint64)
    ln = np.array([0x80, 0x80], np.uint64)
    for a in (h, s, ln):
        a.flags.writeable = False
    idx = SharingIndex()
    idx.add_many(h, s, ln)
    assert idx.holders_many(s).tolist() == [1, 3]
    idx.remove_many(h, s, ln)
    assert len(idx) == 0


def test_not_writing_during_a_batch():
    """A batch query running without the GIL refuses a concurrent mutation (or the mutation
    happens entirely before or after it); the index stays consistent either way."""
    import threading
    idx = SharingIndex()
    for k in range(0, 4096):
        idx.add(k % 64, k * 0x40, 0x40)
    addrs = np.random.default_rng(0).integers(0, 4096 * 0x40, 2_000_000, dtype=np.uint64)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", idx.holders_many(addrs)))
    t.start()
    refused = 0
    while t.is_alive():
        try:
            idx.add(0, 1 << 40, 0x40)
            idx.remove(0, 1 << 40, 0x40)
        except ConcurrentModificationError:
            refused += 1
    t.join()
    idx.remove(0, 1 << 40, 0x40)
    idx.check_invariants()
    exp = np.left_shift(np.uint64(1), (addrs // np.uint64(0x40)) % np.uint64(64))
    assert np.array_equal(out["r"], exp)


def test_holder_sets_no_range_uses_are_forgotten():
    """Adding and removing hosts over one range makes a new holder set almost every time;
    sets no range uses any more must be dropped (ids are uint32: they must never run out),
    and the answers must stay right through each renumbering."""
    idx = SharingIndex()
    rng = np.random.default_rng(0)
    held = 0
    for step in range(20_000):
        h = int(rng.integers(64))
        if rng.random() < 0.5:
            idx.add(h, 0, 4096)
            held |= 1 << h
        else:
            idx.remove(h, 0, 4096)
            held &= ~(1 << h)
        assert idx.holder_sets <= 2 * len(idx) + 1024 + 1
        if step % 997 == 0:
            assert idx.holders(0) == held and idx.holders(4032) == held
            idx.check_invariants()
    assert idx.holders_many([0, 2048, 4096]).tolist() == [held, held, 0]
    idx.check_invariants()


def test_renumbering_holder_sets_keeps_every_range_right():
    """Several ranges whose holder sets were made in no particular order: each renumbering
    (many happen here) must keep every range's holders."""
    idx = SharingIndex(leaf_capacity=4)
    rng = np.random.default_rng(1)
    ranges = [(k * 0x10000, 0x1000) for k in range(12)]
    held = [0] * len(ranges)
    for step in range(30_000):
        r = int(rng.integers(len(ranges)))
        h = int(rng.integers(64))
        start, length = ranges[r]
        if rng.random() < 0.5:
            idx.add(h, start, length)
            held[r] |= 1 << h
        else:
            idx.remove(h, start, length)
            held[r] &= ~(1 << h)
        if step % 1499 == 0:
            idx.check_invariants()
            assert idx.holders_many([s for s, _ in ranges]).tolist() == held
    assert idx.holder_sets <= 2 * len(idx) + 1024 + 1
    assert idx.holders_many([s + 0x40 for s, _ in ranges]).tolist() == held
    idx.check_invariants()


def test_renumbering_when_old_sets_sit_at_high_addresses():
    """Holder sets made in descending address order (the oldest set at the highest address),
    then enough churn elsewhere to renumber them: every range keeps its holders."""
    idx = SharingIndex()
    for h in range(64):                                  # range k holds {63 - k}: made high to low
        idx.add(h, (63 - h) * 0x10000, 0x1000)
    want = [1 << (63 - k) for k in range(64)]
    churn = 0x1000_0000
    rng = np.random.default_rng(2)
    for _ in range(5000):                                 # thousands of sets on another range
        h = int(rng.integers(64))
        (idx.add if rng.random() < 0.5 else idx.remove)(h, churn, 0x1000)
    assert idx.holder_sets <= 2 * len(idx) + 1024 + 1
    assert idx.holders_many([k * 0x10000 for k in range(64)]).tolist() == want
    idx.check_invariants()


def test_gaps_and_classify_many_follow_the_holders():
    rng = np.random.default_rng(11)
    idx = SharingIndex(64)
    held = np.zeros(256, bool)                       # 256 granules, held by anyone?
    for _ in range(60):
        h, s, n = int(rng.integers(0, 4)), int(rng.integers(0, 250)), int(rng.integers(1, 6))
        n = min(n, 256 - s)
        if rng.random() < 0.7:
            idx.add(h, s * 64, n * 64)
        else:
            idx.remove(h, s * 64, n * 64)
        held[:] = False
        starts, lengths, _ = idx.to_arrays()
        for a, b in zip(starts.tolist(), lengths.tolist()):
            held[a // 64:(a + b) // 64] = True
        gs, gl = idx.gaps(0, 256 * 64)
        free = np.zeros(256, bool)
        for a, b in zip(gs.tolist(), gl.tolist()):
            free[a // 64:(a + b) // 64] = True
        assert (free == ~held).all()
    q = np.arange(0, 250, 7, dtype=np.uint64) * np.uint64(64)
    kinds = idx.classify_many(q, np.full(len(q), 6 * 64, np.uint64))
    for a, k in zip((q // np.uint64(64)).tolist(), kinds.tolist()):
        part = held[a:a + 6]
        if not part.any():
            assert k == 0
        elif not part.all():
            assert k == 3
        else:
            assert k in (1, 2)
