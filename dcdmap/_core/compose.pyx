"""Chained translation: VA -> GPA -> HPA -> DPA through a list of ExtentMaps.

``compose(a, b, ...)`` builds the one ExtentMap equal to applying the maps in turn. Each
extent of ``a`` sends ``[start, start + length)`` to ``[target, target + length)`` in the
domain of ``b``; that image is cut wherever ``b``'s extents begin or end, and each piece
becomes an extent of the result. Pieces whose image ``b`` does not map are dropped (or,
with ``strict=True``, raise UnmappedError naming the stage). Cost: O(n_a log n_b + output).

``Chain(maps)`` keeps the maps and translates through all of them per address: scalar,
batch (one C loop without the GIL, sorted first for locality, a finger per stage), and at
C level (``Chain.translate_c``) for Cython callers.
"""
import numpy as np

cimport cython
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

from dcdmap._core._types cimport addr_t, label_t, index_t
from dcdmap._core._mem cimport grow
from dcdmap._core._sort cimport KeyIndex, sort_by_key, is_sorted, locality_order
from dcdmap._core.extentmap cimport (
    ExtentMap, MapView, Leaf, Finger, Builder, Batch, finger_find, seek, advance, view_translate,
    builder_init, builder_push, builder_discard, sort_batch, batch_free,
)
from dcdmap._core.extentmap import as_u64_array
from dcdmap._core.extentmap cimport to_u64

from dcdmap.errors import InputTypeError, InvalidRangeError, UnmappedError

__all__ = ["compose", "Chain", "translate_chain"]

cdef addr_t ADDR_MAX = 0xFFFFFFFFFFFFFFFF
cdef index_t SORT_MIN = 512


cdef struct Pieces:          # a growable list of extents, in address order
    addr_t* starts
    addr_t* lasts
    addr_t* targets
    label_t* labels
    index_t n
    index_t alloc


cdef int pieces_push(Pieces* p, addr_t start, addr_t last, addr_t target, label_t label) noexcept nogil:
    cdef index_t alloc
    if p.n == p.alloc:
        alloc = p.alloc * 2 if p.alloc else 1024
        if (grow(<void**>&p.starts, alloc * sizeof(addr_t)) < 0
                or grow(<void**>&p.lasts, alloc * sizeof(addr_t)) < 0
                or grow(<void**>&p.targets, alloc * sizeof(addr_t)) < 0
                or grow(<void**>&p.labels, alloc * sizeof(label_t)) < 0):
            return -1
        p.alloc = alloc
    p.starts[p.n] = start
    p.lasts[p.n] = last
    p.targets[p.n] = target
    p.labels[p.n] = label
    p.n += 1
    return 0


cdef void pieces_free(Pieces* p) noexcept nogil:
    free(p.starts); free(p.lasts); free(p.targets); free(p.labels)


cdef int compose_pass(ExtentMap a, ExtentMap b, Pieces* out, bint strict, addr_t* hole,
                      addr_t* bits) noexcept nogil:
    """Collect the pieces of a∘b.  a's extents are taken in the order of their *targets*, so
    that the walk through b only moves forward (a seek per extent near the previous one, in
    cache) however a scatters its targets; the pieces then come out in target order, and the
    caller sorts them by start.  0; -1 out of memory; 1 with strict, at the address of a's
    image that b does not map whose preimage is lowest (stored in *hole).  *bits collects the OR of every piece's start
    and length (for the result's granule)."""
    cdef index_t n = a.count, li, j, k = 0, i
    cdef addr_t s, x, x_last, piece_last, start, length
    cdef addr_t* starts = <addr_t*>malloc(n * sizeof(addr_t) + 1)
    cdef addr_t* lasts = <addr_t*>malloc(n * sizeof(addr_t) + 1)
    cdef addr_t* targets = <addr_t*>malloc(n * sizeof(addr_t) + 1)
    cdef label_t* labels = <label_t*>malloc(n * sizeof(label_t) + 1)
    cdef KeyIndex* order = NULL
    cdef Leaf* la
    cdef Leaf* lb
    cdef Finger f
    cdef bint more, found_hole = False
    cdef addr_t hole_at = 0
    cdef int status = 0
    if starts == NULL or lasts == NULL or targets == NULL or labels == NULL:
        status = -1
    else:
        for li in range(a.v.nleaves):
            la = a.v.leaves[li]
            for j in range(la.n):
                starts[k] = la.start[j]
                lasts[k] = la.last[j]
                targets[k] = la.target[j]
                labels[k] = la.label[j]
                k += 1
        if not is_sorted(targets, n):
            order = sort_by_key(targets, n, 0)
            if order == NULL or into_order(order, n, starts, lasts, targets, labels) < 0:
                status = -1
    f.li = -1
    i = 0
    while status == 0 and i < n:
        s = starts[i]
        x = targets[i]                            # a's image is [x, x_last] in b's domain
        x_last = x + (lasts[i] - s)
        # Targets ascend: walk b forward from where the previous image ended; seek afresh only
        # when an image starts before that (a may map two ranges onto one).
        if f.li >= 0 and f.li < b.v.nleaves and b.v.leaves[f.li].start[f.j] <= x:
            more = True
            while more and b.v.leaves[f.li].last[f.j] < x:
                more = advance(&b.v, &f)
        else:
            more = seek(&b.v, x, &f)
        while True:
            if not more or b.v.leaves[f.li].start[f.j] > x_last:
                if strict:
                    note_hole(s + (x - targets[i]), x, &found_hole, &hole_at, hole)
                break
            lb = b.v.leaves[f.li]
            if lb.start[f.j] > x:
                if strict:
                    note_hole(s + (x - targets[i]), x, &found_hole, &hole_at, hole)
                    break
                x = lb.start[f.j]
            piece_last = lb.last[f.j] if lb.last[f.j] < x_last else x_last
            start = s + (x - targets[i])
            length = piece_last - x + 1
            if pieces_push(out, start, start + (length - 1), lb.target[f.j] + (x - lb.start[f.j]),
                           labels[i]) < 0:
                status = -1
                break
            bits[0] |= start | length
            if piece_last == x_last:
                break
            x = piece_last + 1
            more = advance(&b.v, &f)
        i += 1
    free(starts); free(lasts); free(targets); free(labels); free(order)
    if status == 0 and found_hole:
        return 1
    return status


cdef int into_order(const KeyIndex* order, index_t n, addr_t* starts, addr_t* lasts, addr_t* targets,
                    label_t* labels) noexcept nogil:
    """Rearrange the four arrays into the order of `order` (a sort by target), in place through
    scratch copies: each element moves by a scatter through its rank (sequential reads)."""
    cdef index_t k, i, r
    cdef index_t* rank = <index_t*>malloc(n * sizeof(index_t) + 1)
    cdef addr_t* s2 = <addr_t*>malloc(n * sizeof(addr_t) + 1)
    cdef addr_t* l2 = <addr_t*>malloc(n * sizeof(addr_t) + 1)
    cdef label_t* b2 = <label_t*>malloc(n * sizeof(label_t) + 1)
    if rank == NULL or s2 == NULL or l2 == NULL or b2 == NULL:
        free(rank); free(s2); free(l2); free(b2)
        return -1
    for k in range(n):
        rank[order[k].index] = k
    for i in range(n):
        r = rank[i]
        s2[r] = starts[i]
        l2[r] = lasts[i]
        b2[r] = labels[i]
    for k in range(n):
        targets[k] = order[k].key
    memcpy(starts, s2, n * sizeof(addr_t))
    memcpy(lasts, l2, n * sizeof(addr_t))
    memcpy(labels, b2, n * sizeof(label_t))
    free(rank); free(s2); free(l2); free(b2)
    return 0


cdef inline void note_hole(addr_t at, addr_t image, bint* found, addr_t* hole_at, addr_t* hole) noexcept nogil:
    """Keep the hole whose address in a is lowest (the one a walk in address order meets first)."""
    if not found[0] or at < hole_at[0]:
        found[0] = True
        hole_at[0] = at
        hole[0] = image


cdef ExtentMap compose_two(ExtentMap a, ExtentMap b, bint strict, index_t stage):
    cdef addr_t hole = 0, bits = 0, g
    cdef int status
    cdef index_t i
    cdef Pieces p
    cdef Builder bd
    cdef Batch batch
    cdef KeyIndex* porder = NULL
    cdef ExtentMap result
    batch.owned = False                  # (freed in `finally` whatever happens)
    p.starts = p.lasts = p.targets = NULL
    p.labels = NULL
    p.n = p.alloc = 0
    # The result's granule: the smaller input granule, lowered if a piece is finer.
    g = min(a.granule, b.granule)
    a.begin_read()
    b.begin_read()
    try:
        with nogil:
            status = compose_pass(a, b, &p, strict, &hole, &bits)
        if status == 1:
            raise UnmappedError(f"stage {stage} does not map {hole:#x}, in the image of stage {stage - 1}")
        if bits and (bits & (~bits + 1)) < g:
            g = bits & (~bits + 1)
        result = ExtentMap(g, leaf_capacity=a.cap)
        batch.starts = p.starts
        batch.lasts = p.lasts
        batch.targets = p.targets
        batch.labels = p.labels
        batch.owned = False
        with nogil:
            if status == 0 and p.n and not is_sorted(p.starts, p.n):
                porder = sort_by_key(p.starts, p.n, 0)
                if porder == NULL or sort_batch(&batch, porder, p.n) < 0:
                    status = -1
            if status == 0 and p.n:
                status = builder_init(&bd, p.n, a.cap)
                i = 0
                while status == 0 and i < p.n:
                    status = builder_push(&bd, batch.starts[i], batch.lasts[i], batch.targets[i],
                                          batch.labels[i])
                    i += 1
                if status == 0:
                    result.install(&bd)
                else:
                    builder_discard(&bd)
        if status != 0:
            raise MemoryError()
    finally:
        a.readers -= 1
        b.readers -= 1
        pieces_free(&p)
        free(porder)
        batch_free(&batch)
    return result


cdef list check_maps(maps):
    try:
        maps = list(maps)
    except TypeError:
        raise InputTypeError(f"a chain takes a sequence of ExtentMaps, not {type(maps).__name__}") from None
    if not maps:
        raise InvalidRangeError("a chain needs at least one map")
    for k, m in enumerate(maps):
        if not isinstance(m, ExtentMap):
            raise InputTypeError(f"stage {k} is a {type(m).__name__}, not an ExtentMap")
    return maps


def compose(*maps, strict=False):
    """The ExtentMap equal to applying ``maps`` in turn (the first one first).

    Extents are split where the next map's extents end; labels come from the first map.
    Addresses whose image some later map does not map are left out of the result, or with
    ``strict=True`` raise UnmappedError naming the stage.  The result's granule is the
    smallest input granule (lower if targets are finer).

    >>> va = ExtentMap(); va.insert(0, 0x2000, target=0x10000, label=1)     # VA -> GPA
    >>> gpa = ExtentMap(); gpa.insert(0x10000, 0x1000, target=0x80000)       # GPA -> HPA
    >>> gpa.insert(0x11000, 0x1000, target=0x40000)
    >>> [tuple(e) for e in compose(va, gpa)]
    [(0, 4096, 524288, 1), (4096, 4096, 262144, 1)]
    """
    cdef list ms = check_maps(maps)
    cdef ExtentMap result = ms[0]
    if len(ms) == 1:
        return result.copy()
    for k in range(1, len(ms)):
        result = compose_two(result, ms[k], strict, k)
    return result


@cython.final
cdef class Chain:
    """A chain of ExtentMaps applied in turn, for example VA -> GPA -> HPA -> DPA.

    The chain keeps references to the maps (it does not copy them): later changes to a map
    show in the chain.  Batch translation runs without the GIL as a batch read of every map.

    >>> va = ExtentMap(); va.insert(0, 0x2000, target=0x10000)
    >>> gpa = ExtentMap(); gpa.insert(0x10000, 0x2000, target=0x80000)
    >>> c = Chain([va, gpa])
    >>> hex(c.translate(0x40))
    '0x80040'
    >>> c.translate_many([0x40, 0x1000]).tolist()
    [524352, 528384]
    """

    def __cinit__(self):
        self.stages = NULL
        self.nstages = 0

    def __init__(self, maps):
        cdef list ms = check_maps(maps)
        cdef index_t k
        self.maps = tuple(ms)
        self.stages = <MapView**>malloc(len(ms) * sizeof(MapView*))
        if self.stages == NULL:
            raise MemoryError()
        for k in range(len(ms)):
            self.stages[k] = &(<ExtentMap>ms[k]).v      # its map is kept alive by self.maps
        self.nstages = len(ms)

    def __dealloc__(self):
        free(self.stages)

    def __len__(self):
        return self.nstages

    cdef bint translate_c(self, addr_t addr, addr_t* out, index_t* stage) noexcept nogil:
        cdef index_t k
        for k in range(self.nstages):
            if not view_translate(self.stages[k], addr, &addr):
                stage[0] = k
                return False
        out[0] = addr
        return True

    def translate(self, addr):
        """Translate one address through every stage; UnmappedError names the stage that
        does not map it."""
        cdef addr_t a = to_u64(addr, "address"), out
        cdef index_t stage = 0
        for m in self.maps:
            (<ExtentMap>m).check_not_writing()
        if self.translate_c(a, &out, &stage):
            return out
        raise UnmappedError(f"address {a:#x}: stage {stage} has no extent for its image")

    def translate_many(self, addrs, missing=None):
        """Translate a batch through every stage in one C pass without the GIL.

        Unmapped at any stage: UnmappedError naming the first such address (caller's order)
        and the stage, or ``missing`` in its place.
        """
        cdef const addr_t[::1] q
        cdef addr_t[::1] out
        cdef index_t n, bad = -1, bad_stage = 0, k
        cdef bint fill = missing is not None
        cdef addr_t fill_value = 0
        cdef int status = 0
        arr = as_u64_array(addrs, "addrs")
        if fill:
            fill_value = to_u64(missing, "missing")
        n = arr.shape[0]
        result = np.empty(n, np.uint64)
        if n == 0:
            return result
        q = arr
        out = result
        entered = []
        try:
            for m in self.maps:
                (<ExtentMap>m).begin_read()
                entered.append(m)
            with nogil:
                status = chain_batch(self, &q[0], n, &out[0], fill, fill_value, &bad, &bad_stage)
        finally:
            for m in entered:
                (<ExtentMap>m).readers -= 1
        if status < 0:
            raise MemoryError()
        if bad >= 0:
            raise UnmappedError(f"addrs[{bad}] = {int(arr[bad]):#x}: stage {bad_stage} has no extent "
                                f"for its image")
        return result

    def compose(self, strict=False):
        """The chain as one ExtentMap (see :func:`compose`)."""
        return compose(*self.maps, strict=strict)


cdef int chain_batch(Chain c, const addr_t* q, index_t n, addr_t* out, bint fill, addr_t fill_value,
                     index_t* bad, index_t* bad_stage) noexcept nogil:
    cdef KeyIndex* order = NULL
    cdef Finger* fingers = <Finger*>malloc(c.nstages * sizeof(Finger))
    cdef index_t k, s, pos
    cdef addr_t addr
    cdef Leaf* leaf
    cdef bint ok
    if fingers == NULL:
        return -1
    for s in range(c.nstages):
        fingers[s].li = -1
        fingers[s].j = 0
    cdef bint failed = False
    if n >= SORT_MIN:
        order = locality_order(q, n, &failed)
        if failed:
            free(fingers)
            return -1
    for k in range(n):
        if order != NULL:
            addr = order[k].key
            pos = order[k].index
        else:
            addr = q[k]
            pos = k
        ok = True
        for s in range(c.nstages):
            if not finger_find(c.stages[s], &fingers[s], addr):
                ok = False
                if not fill and (bad[0] < 0 or pos < bad[0]):
                    bad[0] = pos
                    bad_stage[0] = s
                break
            leaf = c.stages[s].leaves[fingers[s].li]
            addr = leaf.target[fingers[s].j] + (addr - leaf.start[fingers[s].j])
        out[pos] = addr if ok else fill_value
    free(order)
    free(fingers)
    return 0


def translate_chain(maps, addrs, missing=None):
    """Translate ``addrs`` through ``maps`` in turn, in one C pass: ``Chain(maps).translate_many``."""
    return Chain(maps).translate_many(addrs, missing)
