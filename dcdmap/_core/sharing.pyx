"""SharingIndex: which hosts hold each byte of a device, when hosts' ranges overlap.

The index is an ExtentMap of *elementary ranges*: maximal ranges over which the set of
holders does not change. Each range carries, as its label, the id of its holder set; a small
table maps ids to 64-bit holder masks (bit h = host h), and an open-addressing hash table in C
maps masks back to ids, so no Python object is involved per range or per set. Ranges that
touch and have the same holders are always merged, so the map is canonical: two indexes that
hold the same bytes for the same hosts have the same ranges.

``add(host, start, length)`` walks the k ranges it meets, computes the new pieces (holes get
``{host}``, existing ranges gain the bit), merges equal neighbours (also across the ends of
the range), removes ``[start, end)`` from the map and inserts the pieces: O(log n + k·cap).
``remove`` is the same with the bit cleared (pieces left with no holder become holes).
Queries are the engine's: ``holders_many`` is one C loop without the GIL.

Hosts are numbered 0..63. Holder sets no range uses any more are forgotten now and then: when
there are more than 2n + 1024 sets, the ids in use are renumbered (one pass over the ranges)
and the hash table is rebuilt, so memory stays O(n) however many sets come and go.
"""
import numpy as np

cimport cython
from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free

from dcdmap._core._types cimport addr_t, label_t, index_t
from dcdmap._core._mem cimport grow
from dcdmap._core.extentmap cimport (
    ExtentMap, Leaf, Finger, seek, advance, to_u64, query_batch, Q_LABEL,
)
from dcdmap._core.extentmap import Ranges, as_u64_array

from dcdmap.errors import ArrayShapeError, InvalidRangeError

__all__ = ["SharingIndex", "MAX_HOSTS"]

MAX_HOSTS = 64
cdef addr_t ADDR_MAX = 0xFFFFFFFFFFFFFFFF
cdef uint64_t EMPTY_KEY = 0        # mask 0 is never stored (no holder = a hole)
cdef index_t MAX_SETS = 0xFFFFFFFF  # holder-set ids are uint32 labels


cdef uint64_t MIX1 = 0xbf58476d1ce4e5b9
cdef uint64_t MIX2 = 0x94d049bb133111eb


cdef inline uint64_t mix(uint64_t x) noexcept nogil:
    """A 64-bit finaliser (splitmix64), to spread masks over the hash table."""
    x ^= x >> 30
    x *= MIX1
    x ^= x >> 27
    x *= MIX2
    return x ^ (x >> 31)


@cython.final
cdef class SharingIndex:
    """Which of up to 64 hosts hold each byte, for ranges that overlap across hosts.

    >>> idx = SharingIndex()
    >>> idx.add(0, 0x0000, 0x3000)
    >>> idx.add(1, 0x1000, 0x3000)
    >>> bin(idx.holders(0x1800)), bin(idx.holders(0x3800)), idx.holders(0x9000)
    ('0b11', '0b10', 0)
    >>> idx.holders_many([0x0, 0x2fc0, 0x3000]).tolist()       # bitmasks (np.bitwise_count: how many)
    [1, 3, 2]
    >>> idx.held_by(1)
    Ranges(starts=array([4096], dtype=uint64), lengths=array([12288], dtype=uint64))
    >>> idx.coverage()[:3]                                       # bytes held by exactly 0, 1, 2 hosts
    [0, 8192, 8192]
    >>> idx.remove(0, 0x0000, 0x3000); len(idx)
    1

    Addresses and lengths are multiples of ``granule`` (64 by default), as for ExtentMap.
    Threads: like ExtentMap (batch reads may run concurrently; mutations then raise).
    """

    def __cinit__(self):
        self.masks = NULL
        self.nmasks = 0
        self.masks_alloc = 0
        self.table_keys = NULL
        self.table_ids = NULL
        self.table_size = 0
        self.buf_start = NULL
        self.buf_last = NULL
        self.buf_mask = NULL
        self.buf_alloc = 0

    def __init__(self, granule=64, *, leaf_capacity=256):
        self.m = ExtentMap(granule, leaf_capacity=leaf_capacity)

    def __dealloc__(self):
        free(self.masks)
        free(self.table_keys)
        free(self.table_ids)
        free(self.buf_start)
        free(self.buf_last)
        free(self.buf_mask)

    # ------------------------------------------------------------------ holder sets

    cdef int64_t intern(self, uint64_t mask) noexcept nogil:
        """The id of holder set `mask` (non-zero), made if new; -1 when out of memory."""
        cdef uint64_t i
        cdef uint64_t* keys
        cdef label_t* ids
        cdef index_t size, k
        if 2 * (self.nmasks + 1) > self.table_size:          # keep the table at most half full
            size = self.table_size * 2 if self.table_size else 64
            keys = <uint64_t*>calloc(size, sizeof(uint64_t))
            ids = <label_t*>malloc(size * sizeof(label_t))
            if keys == NULL or ids == NULL:
                free(keys)
                free(ids)
                return -1
            free(self.table_keys)
            free(self.table_ids)
            self.table_keys = keys
            self.table_ids = ids
            self.table_size = size
            for k in range(self.nmasks):
                self.table_insert(self.masks[k], <label_t>k)
        i = mix(mask) & <uint64_t>(self.table_size - 1)
        while self.table_keys[i] != EMPTY_KEY:
            if self.table_keys[i] == mask:
                return self.table_ids[i]
            i = (i + 1) & <uint64_t>(self.table_size - 1)
        if self.nmasks >= MAX_SETS:           # ids are uint32 labels
            return -1
        if self.nmasks == self.masks_alloc:
            size = self.masks_alloc * 2 if self.masks_alloc else 64
            keys = <uint64_t*>realloc(self.masks, size * sizeof(uint64_t))
            if keys == NULL:
                return -1
            self.masks = keys
            self.masks_alloc = size
        self.masks[self.nmasks] = mask
        self.table_keys[i] = mask
        self.table_ids[i] = <label_t>self.nmasks
        self.nmasks += 1
        return self.nmasks - 1

    cdef int compact(self, ExtentMap m) noexcept nogil:
        """Renumber the holder sets the ranges use as 0..k-1, forget the others, and rebuild
        the hash table; the ranges keep their holders.  O(n + sets).  0, or -1 out of memory."""
        cdef index_t* new_id = <index_t*>malloc((self.nmasks + 1) * sizeof(index_t))
        cdef index_t k = 0, i, li, j
        cdef Leaf* leaf
        if new_id == NULL:
            return -1
        for i in range(self.nmasks):
            new_id[i] = -1
        for li in range(m.v.nleaves):         # mark the ids in use
            leaf = m.v.leaves[li]
            for j in range(leaf.n):
                new_id[leaf.label[j]] = 0
        for i in range(self.nmasks):          # number them in increasing order: new_id[i] <= i,
            if new_id[i] == 0:                # so the masks can move down in place
                new_id[i] = k
                self.masks[k] = self.masks[i]
                k += 1
        for li in range(m.v.nleaves):
            leaf = m.v.leaves[li]
            for j in range(leaf.n):
                leaf.label[j] = <label_t>new_id[leaf.label[j]]
        free(new_id)
        self.nmasks = k
        for i in range(self.table_size):
            self.table_keys[i] = EMPTY_KEY
        for i in range(k):
            self.table_insert(self.masks[i], <label_t>i)
        return 0

    cdef void table_insert(self, uint64_t mask, label_t id) noexcept nogil:
        cdef uint64_t i = mix(mask) & <uint64_t>(self.table_size - 1)
        while self.table_keys[i] != EMPTY_KEY:
            i = (i + 1) & <uint64_t>(self.table_size - 1)
        self.table_keys[i] = mask
        self.table_ids[i] = id

    cdef int reserve(self, index_t n) noexcept nogil:
        """Room for n pieces in the scratch buffers."""
        if n <= self.buf_alloc:
            return 0
        n = max(n, 2 * self.buf_alloc, 64)
        if (grow(<void**>&self.buf_start, n * sizeof(addr_t)) < 0
                or grow(<void**>&self.buf_last, n * sizeof(addr_t)) < 0
                or grow(<void**>&self.buf_mask, n * sizeof(uint64_t)) < 0):
            return -1
        self.buf_alloc = n
        return 0

    # ------------------------------------------------------------------ updates

    cdef int update(self, ExtentMap m, uint64_t bit, addr_t s, addr_t last, bint adding) noexcept nogil:
        """Give (adding) or take away holder `bit` over [s, last].  0, or -1 out of memory
        (the index is then unchanged).  m is self.m, passed in for nogil use."""
        cdef Finger f
        cdef Leaf* leaf
        cdef index_t k = 0, npieces = 0, i, w
        cdef addr_t cur = s, ps, pl, rs = s, rl = last, gone
        cdef uint64_t mask
        cdef bint more, done = False
        cdef int64_t lab
        # Holder sets no range uses any more are dropped now and then (amortised O(1)).
        if self.nmasks > 2 * m.count + 1024 and self.compact(m) < 0:
            return -1
        # Count the ranges met, for the scratch size: at most one hole before each, one after.
        more = seek(&m.v, s, &f)
        while more and m.v.leaves[f.li].start[f.j] <= last:
            k += 1
            more = advance(&m.v, &f)
        if self.reserve(2 * k + 1) < 0:
            return -1
        # The new pieces over [s, last], in order: holes, then ranges with the bit changed.
        more = seek(&m.v, s, &f)
        while more and not done:
            leaf = m.v.leaves[f.li]
            if leaf.start[f.j] > last:
                break
            if leaf.start[f.j] > cur and adding:
                self.push(&npieces, cur, leaf.start[f.j] - 1, bit)
            ps = leaf.start[f.j] if leaf.start[f.j] > s else s
            pl = leaf.last[f.j] if leaf.last[f.j] < last else last
            mask = self.masks[leaf.label[f.j]]
            self.push(&npieces, ps, pl, (mask | bit) if adding else (mask & ~bit))
            if pl == last:
                done = True
            else:
                cur = pl + 1
                more = advance(&m.v, &f)
        if not done and adding:
            self.push(&npieces, cur, last, bit)
        # Merge with the neighbours outside [s, last] that touch and end up with the same holders.
        if s > 0 and m.locate(s - 1, &f.li, &f.j):
            leaf = m.v.leaves[f.li]
            if npieces and self.buf_start[0] == s and self.masks[leaf.label[f.j]] == self.buf_mask[0] \
                    and not whole_space(leaf.start[f.j], self.buf_last[0]):
                self.buf_start[0] = leaf.start[f.j]
                rs = leaf.start[f.j]
        if last < ADDR_MAX and m.locate(last + 1, &f.li, &f.j):
            leaf = m.v.leaves[f.li]
            if npieces and self.buf_last[npieces - 1] == last \
                    and self.masks[leaf.label[f.j]] == self.buf_mask[npieces - 1] \
                    and not whole_space(self.buf_start[npieces - 1], leaf.last[f.j]):
                self.buf_last[npieces - 1] = leaf.last[f.j]
                rl = leaf.last[f.j]
        # Merge touching pieces with equal holders; drop pieces left with none.
        w = 0
        for i in range(npieces):
            if self.buf_mask[i] == 0:
                continue
            if w and self.buf_mask[w - 1] == self.buf_mask[i] and self.buf_last[w - 1] + 1 == self.buf_start[i] \
                    and not whole_space(self.buf_start[w - 1], self.buf_last[i]):
                self.buf_last[w - 1] = self.buf_last[i]
                continue
            self.buf_start[w] = self.buf_start[i]
            self.buf_last[w] = self.buf_last[i]
            self.buf_mask[w] = self.buf_mask[i]
            w += 1
        # Make every id first (the only step that can fail), then rewrite [rs, rl].
        for i in range(w):
            if self.intern(self.buf_mask[i]) < 0:
                return -1
        if m.remove_c(rs, rl, &gone) < 0:
            return -1
        for i in range(w):
            lab = self.intern(self.buf_mask[i])
            if m.insert_c(self.buf_start[i], self.buf_last[i], self.buf_start[i], <label_t>lab) < 0:
                return -1
        return 0

    cdef void push(self, index_t* n, addr_t start, addr_t last, uint64_t mask) noexcept nogil:
        self.buf_start[n[0]] = start
        self.buf_last[n[0]] = last
        self.buf_mask[n[0]] = mask
        n[0] += 1

    cdef uint64_t host_bit(self, host) except? 0:
        cdef addr_t h = to_u64(host, "host")
        if h >= 64:
            raise InvalidRangeError(f"host {h} is not in 0..63")
        return (<uint64_t>1) << h

    def add(self, host, start, length):
        """Record that ``host`` (0..63) holds ``[start, start + length)`` (again is fine)."""
        self.change(host, start, length, True)

    def remove(self, host, start, length):
        """Record that ``host`` no longer holds ``[start, start + length)`` (parts it did not
        hold are fine); ranges are split as needed."""
        self.change(host, start, length, False)

    cdef change(self, host, start, length, bint adding):
        cdef addr_t s, last
        cdef uint64_t bit = self.host_bit(host)
        self.m.check_range(start, length, &s, &last)
        self.m.check_mutable()
        if self.update(self.m, bit, s, last, adding) < 0:
            raise MemoryError()
        self.m.changed()

    def add_many(self, hosts, starts, lengths):
        """``add`` for each (host, start, length), checked first: all or nothing."""
        self.change_many(hosts, starts, lengths, True)

    def remove_many(self, hosts, starts, lengths):
        """``remove`` for each (host, start, length), checked first: all or nothing."""
        self.change_many(hosts, starts, lengths, False)

    cdef change_many(self, hosts, starts, lengths, bint adding):
        cdef const addr_t[::1] h, s, ln
        cdef index_t n, i
        cdef int status = 0
        cdef ExtentMap m = self.m
        h_arr = as_u64_array(hosts, "hosts")
        s_arr = as_u64_array(starts, "starts")
        l_arr = as_u64_array(lengths, "lengths")
        n = s_arr.shape[0]
        if h_arr.shape[0] != n or l_arr.shape[0] != n:
            raise ArrayShapeError(f"hosts, starts and lengths have {h_arr.shape[0]}, {n} and "
                                  f"{l_arr.shape[0]} elements")
        if n and h_arr.max() >= 64:
            i = int(np.argmax(h_arr >= 64))
            raise InvalidRangeError(f"hosts[{i}] = {int(h_arr[i])} is not in 0..63")
        # Range checks through the engine's own batch validation (a scratch map).
        ExtentMap(self.m.granule).remove_many(s_arr, l_arr)
        self.m.check_mutable()
        if n == 0:
            return
        h = h_arr
        s = s_arr
        ln = l_arr
        self.m.writing = True
        try:
            with nogil:
                for i in range(n):
                    if self.update(m, (<uint64_t>1) << h[i], s[i], s[i] + (ln[i] - 1), adding) < 0:
                        status = -1
                        break
        finally:
            self.m.writing = False
        self.m.changed()
        if status < 0:
            raise MemoryError()

    def clear(self):
        """Forget every range (holder-set ids are kept)."""
        self.m.clear()

    # ------------------------------------------------------------------ queries

    def holders(self, addr):
        """The bitmask of the hosts holding ``addr`` (bit h = host h; 0 = nobody)."""
        cdef addr_t a = to_u64(addr, "address")
        cdef index_t li, j
        self.m.check_not_writing()
        if self.m.locate(a, &li, &j):
            return self.masks[self.m.v.leaves[li].label[j]]
        return 0

    def holders_many(self, addrs):
        """Holder bitmasks (uint64) for a batch of addresses, in one C loop without the GIL.
        ``np.bitwise_count`` of the result gives how many hosts hold each address."""
        cdef const addr_t[::1] q
        cdef int64_t[::1] ids
        cdef uint64_t[::1] out
        cdef index_t n, i, status = 0
        cdef ExtentMap m = self.m
        arr = as_u64_array(addrs, "addrs")
        n = arr.shape[0]
        result = np.zeros(n, np.uint64)
        if n == 0:
            return result
        id_arr = np.empty(n, np.int64)
        q = arr
        ids = id_arr
        out = result
        self.m.begin_read()
        try:
            with nogil:
                status = query_batch(m, &q[0], n, Q_LABEL, NULL, &ids[0], NULL, False, 0)
                for i in range(n):
                    if ids[i] >= 0:
                        out[i] = self.masks[ids[i]]
        finally:
            self.m.readers -= 1
        if status == -2:
            raise MemoryError()
        return result

    def gaps(self, lo=0, hi=1 << 64):
        """The ranges inside ``[lo, hi)`` that no host holds, as Ranges(starts, lengths).

        >>> idx = SharingIndex(); idx.add(1, 0x40, 0x40)
        >>> [r.tolist() for r in idx.gaps(0, 0x100)]
        [[0, 128], [64, 128]]
        """
        return self.m.gaps(lo, hi)

    def classify_many(self, starts, lengths):
        """For each range, whether any host holds it: ``ExtentMap.FREE`` (nobody holds a byte),
        ``WITHIN`` (one holder set over the whole range), ``COVERED`` (every byte held, by
        changing sets) or ``PARTIAL``.  See ExtentMap.classify_many."""
        return self.m.classify_many(starts, lengths)

    def held_by(self, host):
        """The ranges ``host`` holds, merged, as Ranges(starts, lengths)."""
        cdef uint64_t bit = self.host_bit(host)
        cdef index_t n
        self.m.check_not_writing()
        n = self.host_ranges(bit, NULL, NULL)
        out = Ranges(np.empty(n, np.uint64), np.empty(n, np.uint64))
        cdef addr_t[::1] os = out.starts, ol = out.lengths
        if n:
            self.host_ranges(bit, &os[0], &ol[0])
        return out

    cdef index_t host_ranges(self, uint64_t bit, addr_t* starts, addr_t* lengths) noexcept nogil:
        cdef index_t n = 0, li, j
        cdef addr_t prev_last = 0, run_start = 0
        cdef Leaf* leaf
        for li in range(self.m.v.nleaves):
            leaf = self.m.v.leaves[li]
            for j in range(leaf.n):
                if not self.masks[leaf.label[j]] & bit:
                    continue
                if n and prev_last + 1 == leaf.start[j] and prev_last != ADDR_MAX \
                        and not whole_space(run_start, leaf.last[j]):
                    if starts != NULL:
                        lengths[n - 1] += leaf.last[j] - leaf.start[j] + 1
                else:
                    run_start = leaf.start[j]
                    if starts != NULL:
                        starts[n] = leaf.start[j]
                        lengths[n] = leaf.last[j] - leaf.start[j] + 1
                    n += 1
                prev_last = leaf.last[j]
        return n

    def coverage(self):
        """``c[k]`` = bytes held by exactly k hosts, for k = 0..64 (a list of 65 ints; c[0] is
        0: bytes nobody holds are not counted)."""
        cdef addr_t sums[65]
        cdef addr_t carry[65]
        cdef addr_t ln
        cdef index_t li, j, k
        cdef Leaf* leaf
        self.m.check_not_writing()
        for k in range(65):
            sums[k] = 0
            carry[k] = 0
        for li in range(self.m.v.nleaves):
            leaf = self.m.v.leaves[li]
            for j in range(leaf.n):
                k = popcount(self.masks[leaf.label[j]])
                ln = leaf.last[j] - leaf.start[j] + 1
                sums[k] += ln
                if sums[k] < ln:
                    carry[k] += 1
        return [(<object>carry[k] << 64) + sums[k] for k in range(65)]

    def to_arrays(self):
        """The elementary ranges as (starts, lengths, masks) uint64 arrays, in address order."""
        a = self.m.to_arrays()
        table = np.asarray(<uint64_t[:self.nmasks]>self.masks) if self.nmasks else np.empty(0, np.uint64)
        return a.starts, a.lengths, table[a.labels.astype(np.intp)].copy()

    def __len__(self):
        """The number of elementary ranges."""
        return len(self.m)

    @property
    def granule(self):
        return self.m.granule

    @property
    def holder_sets(self):
        """How many distinct holder sets the index keeps (at most 2 * ranges + 1024 + 1 update)."""
        return self.nmasks

    def __repr__(self):
        return f"SharingIndex({len(self.m)} ranges, {self.nmasks} holder sets)"

    def check_invariants(self):
        """The map's invariants, plus: ranges with equal holders never touch, no range has
        no holder, and the hash table agrees with the id table."""
        cdef index_t k
        self.m.check_invariants()
        starts, lengths, masks = self.to_arrays()
        assert not np.any(masks == 0), "a range has no holder"
        n = len(starts)
        if n > 1:
            touching = starts[1:] == starts[:n - 1] + lengths[:n - 1]
            merge = touching & (masks[1:] == masks[:n - 1])
            # ... except two that together would be all of the 2**64-byte space
            assert not np.any(merge) or (n == 2 and starts[0] == 0 and int(lengths[0]) + int(lengths[1]) == 2**64), \
                "touching ranges with equal holders"
        for k in range(self.nmasks):
            assert self.intern(self.masks[k]) == k, f"holder set {k} is not found by its mask"


cdef inline bint whole_space(addr_t start, addr_t last) noexcept nogil:
    """Whether [start, last] is all of the 64-bit space: 2**64 bytes, a length no range may
    have (lengths are uint64), so such neighbours are kept apart."""
    return start == 0 and last == ADDR_MAX


cdef inline index_t popcount(uint64_t x) noexcept nogil:
    cdef index_t n = 0
    while x:
        x &= x - 1
        n += 1
    return n
