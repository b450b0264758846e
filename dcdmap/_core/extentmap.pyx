"""ExtentMap: an ordered map of non-overlapping, granule-aligned ranges of the 64-bit space.

Layout (a two-level chunked sorted array, the structure of sortedcontainers' SortedList
done in C):

* **leaves** hold up to ``cap`` extents each (256 by default), as four parallel arrays
  ``start[]``, ``last[]``, ``target[]``, ``label[]`` in one malloc block (28 bytes per slot).
  An extent is stored by its *last* byte, not its end, so a range that ends at 2**64 fits.
* **top level**: ``leaves[]`` (pointers) and ``fence[]``, where ``fence[i]`` is the first
  start of leaf ``i``, contiguous so that finding a leaf is one binary search over a small
  array (at 10^6 extents it is ~40 KiB and stays in cache).

Invariants (checked by ``check_invariants()``, after every mutation in DCDMAP_DEBUG builds):

1. extents are sorted by start and do not overlap: ``last[k] < start[k+1]`` across leaves;
2. every start and length is a multiple of the granule, every length > 0, ``last`` never wraps,
   ``target + length - 1`` never wraps;
3. ``1 <= leaf.n <= cap``; with two or more leaves every leaf holds at least ``cap // 4``
   (no empty leaf ever);
4. ``fence[i] == leaves[i].start[0]``; ``count`` and ``mapped`` (bytes, modulo 2**64) equal the
   sums over the leaves; ``prefix`` (extents before each leaf) is right whenever flagged valid.

Complexity, n extents, L = n / cap leaves:

* lookup / translate / overlap test: O(log L + log cap);
* insert / remove one extent: the searches plus a memmove of at most ``cap`` slots; a full
  leaf first passes a share to a neighbour with room (B*-tree style), and only splits when
  both are nearly full; a split or merge moves the top arrays, O(L), rarely;
* removing a range that covers k extents: O(log n + k);
* batch queries: an O(n) sortedness check, then either a finger walk (sorted input) or a
  two-pass radix sort on the top 22 varying bits that gives the queries locality, then a
  finger walk that gallops from the previous answer; O(n + m) for m queries in practice;
* from_arrays: a radix argsort (skipped when the input is sorted), a scatter of the arrays into
  that order, then one pass that fills the leaves 7/8 full; insert_many of a large batch merges
  and rebuilds in O(n + m).

Batch calls release the GIL.  Thread safety: any number of threads may run batch *reads*
(``translate_many``, ``lookup_many``, ``contains_many``, ``to_arrays`` ...) on one map at once;
a mutation attempted while a batch read runs, or any call made while a batch mutation runs,
raises ConcurrentModificationError instead of touching the map.  The checks run under the
GIL, so they cannot race.
"""
import operator
import struct
import zlib
from collections import namedtuple

import numpy as np

cimport cython
from libc.stdint cimport uint64_t, uint32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, free, realloc
from libc.string cimport memmove, memcpy

from dcdmap._core._types cimport addr_t, label_t, index_t, DCDMAP_DEBUG
from dcdmap._core._sort cimport KeyIndex, sort_by_key, is_sorted, varying_bits, locality_order
from dcdmap._core._search cimport last_le, gallop_le

from dcdmap.errors import (
    AlignmentError, ArrayShapeError, ConcurrentModificationError, CorruptDataError,
    InputTypeError, InvalidRangeError, OverlapError, UnmappedError,
)

__all__ = ["ExtentMap", "Extent", "ExtentArrays", "Ranges", "DEFAULT_LEAF_CAPACITY"]

DEFAULT_LEAF_CAPACITY = 256
cdef addr_t ADDR_MAX = 0xFFFFFFFFFFFFFFFF
cdef object SPACE_END = 1 << 64

ExtentArrays = namedtuple("ExtentArrays", "starts lengths targets labels")
ExtentArrays.__doc__ = """Extents as four arrays (uint64, uint64, uint64, uint32), in address order."""
Ranges = namedtuple("Ranges", "starts lengths")
Ranges.__doc__ = """Ranges as two uint64 arrays, in address order."""

# Batch queries shorter than this are answered without sorting them first.
cdef index_t SORT_MIN = 512
# ... nor when the map has fewer extents than this (it then stays in cache: ~1 MiB).
cdef index_t SORT_MAP_MIN = 32768


# ---------------------------------------------------------------------------------------
# Leaves
# ---------------------------------------------------------------------------------------

cdef inline size_t leaf_size(index_t cap) noexcept nogil:
    return sizeof(Leaf) + <size_t>cap * (3 * sizeof(addr_t) + sizeof(label_t))


cdef Leaf* leaf_new(index_t cap) noexcept nogil:
    cdef Leaf* leaf = <Leaf*>malloc(leaf_size(cap))
    if leaf == NULL:
        return NULL
    leaf.n = 0
    leaf.start = <addr_t*>(leaf + 1)
    leaf.last = leaf.start + cap
    leaf.target = leaf.last + cap
    leaf.label = <label_t*>(leaf.target + cap)
    return leaf


cdef inline void leaf_move(Leaf* dst, index_t dj, Leaf* src, index_t sj, index_t k) noexcept nogil:
    """Copy k slots src[sj:sj+k] to dst[dj:dj+k] (the ranges may overlap)."""
    if k <= 0:
        return
    memmove(&dst.start[dj], &src.start[sj], k * sizeof(addr_t))
    memmove(&dst.last[dj], &src.last[sj], k * sizeof(addr_t))
    memmove(&dst.target[dj], &src.target[sj], k * sizeof(addr_t))
    memmove(&dst.label[dj], &src.label[sj], k * sizeof(label_t))


cdef inline bint continues(const Leaf* a, index_t i, const Leaf* b, index_t j) noexcept nogil:
    """Whether extent b[j] carries on a[i]: it touches, has the same label, its target
    continues a[i]'s (with no wrap past 2**64 on either), and the two together are shorter
    than 2**64 (a length of 2**64 does not exist)."""
    cdef addr_t span = a.last[i] - a.start[i]
    return (a.last[i] != ADDR_MAX and a.last[i] + 1 == b.start[j] and a.label[i] == b.label[j]
            and a.target[i] + span != ADDR_MAX and a.target[i] + span + 1 == b.target[j]
            and b.last[j] - a.start[i] != ADDR_MAX)


cdef inline void leaf_set(Leaf* leaf, index_t j, addr_t start, addr_t last, addr_t target,
                          label_t label) noexcept nogil:
    leaf.start[j] = start
    leaf.last[j] = last
    leaf.target[j] = target
    leaf.label[j] = label


@cython.final
cdef class Extent:
    """One extent: ``[start, start + length)`` translating to ``target``, with ``label``.

    It behaves as the tuple ``(start, length, target, label)``: unpack it, index it, compare
    it with a tuple.  It holds C integers (no Python object until a field is read), so that
    ``ExtentMap.lookup`` and iteration stay cheap.

    >>> e = Extent(0x1000, 0x200, 0x9000, 7)
    >>> start, length, target, label = e
    >>> e == (4096, 512, 36864, 7), e.end, e[1]
    (True, 4608, 512)
    """

    def __init__(self, start, length, target, label):
        self.start = to_u64(start, "start")
        self.length = to_u64(length, "length")
        self.target = to_u64(target, "target")
        if to_u64(label, "label") > 0xFFFFFFFF:
            raise InvalidRangeError(f"label {label} does not fit in 32 bits")
        self.label = label

    @property
    def end(self):
        """``start + length`` (an int, up to 2**64)."""
        return <object>self.start + self.length

    cdef tuple as_tuple(self):
        return (self.start, self.length, self.target, self.label)

    def __iter__(self):
        return iter(self.as_tuple())

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.as_tuple()[index]

    def __eq__(self, other):
        if isinstance(other, Extent):
            return self.as_tuple() == (<Extent>other).as_tuple()
        if isinstance(other, tuple):
            return self.as_tuple() == other
        return NotImplemented

    def __hash__(self):
        return hash(self.as_tuple())

    def __repr__(self):
        return (f"Extent(start={self.start}, length={self.length}, target={self.target}, "
                f"label={self.label})")

    def __reduce__(self):
        return (Extent, self.as_tuple())

    def _asdict(self):
        """The fields as a dict."""
        return {"start": self.start, "length": self.length, "target": self.target, "label": self.label}


cdef Extent make_extent(const Leaf* leaf, index_t j):
    cdef Extent e = Extent.__new__(Extent)
    e.start = leaf.start[j]
    e.length = leaf.last[j] - leaf.start[j] + 1
    e.target = leaf.target[j]
    e.label = leaf.label[j]
    return e


# ---------------------------------------------------------------------------------------
# Argument checking (under the GIL: it builds error messages)
# ---------------------------------------------------------------------------------------

cdef addr_t to_u64(object value, str what) except? 0xFFFFFFFFFFFFFFFF:
    """An int in 0 .. 2**64-1 from ``value``, or a dcdmap error naming ``what``."""
    cdef addr_t fast
    if type(value) is int:
        try:
            fast = value            # C conversion; OverflowError if negative or too big
            return fast
        except OverflowError:
            pass
    else:
        if isinstance(value, (bool, float, complex, str, bytes)):
            raise InputTypeError(f"{what} must be an integer, not {type(value).__name__} {value!r}")
        try:
            value = operator.index(value)
        except TypeError:
            raise InputTypeError(f"{what} must be an integer, not {type(value).__name__}") from None
    if value < 0:
        raise InvalidRangeError(f"{what} {value} is negative")
    if value > 0xFFFFFFFFFFFFFFFF:
        raise InvalidRangeError(f"{what} {value:#x} does not fit in 64 bits")
    return <addr_t>value


def as_u64_array(values, str what):
    """A one-dimensional C-contiguous uint64 array of ``values``, checked (shared by the engine).

    ndarrays of any integer dtype are converted without a Python loop; lists and other
    sequences are checked element by element (so 2**64 - 1 stays exact and 1.5 is refused).
    """
    if isinstance(values, np.ndarray):
        arr = values
        if arr.ndim != 1:
            raise ArrayShapeError(f"{what} must be one-dimensional, not of shape {arr.shape}")
        kind = arr.dtype.kind
        if kind == "u":
            return np.ascontiguousarray(arr, dtype=np.uint64)
        if kind == "i":
            if arr.size and arr.min() < 0:
                i = int(np.argmin(arr))
                raise InvalidRangeError(f"{what}[{i}] = {int(arr[i])} is negative")
            return np.ascontiguousarray(arr, dtype=np.uint64)
        if arr.size == 0 and kind in "fO":
            return np.empty(0, dtype=np.uint64)
        raise InputTypeError(f"{what} must be an array of integers, not of dtype {arr.dtype}")
    if isinstance(values, (bytes, bytearray, str)):
        raise InputTypeError(f"{what} must be an array or a sequence of integers, not {type(values).__name__}")
    try:
        items = list(values)
    except TypeError:
        raise InputTypeError(f"{what} must be an array or a sequence of integers, "
                             f"not {type(values).__name__}") from None
    for i, item in enumerate(items):
        if type(item) is not int:
            if isinstance(item, (list, tuple, np.ndarray)):
                raise ArrayShapeError(f"{what} must be one-dimensional: {what}[{i}] is a {type(item).__name__}")
            if isinstance(item, (float, complex, str, bytes, bool)) or not hasattr(item, "__index__"):
                raise InputTypeError(f"{what}[{i}] = {item!r} is not an integer")
            item = items[i] = operator.index(item)
        if item < 0:
            raise InvalidRangeError(f"{what}[{i}] = {item} is negative")
        if item > 0xFFFFFFFFFFFFFFFF:
            raise InvalidRangeError(f"{what}[{i}] = {item:#x} does not fit in 64 bits")
    return np.array(items, dtype=np.uint64)


cdef object as_labels(object labels, index_t n):
    if labels is None:
        return None
    arr = as_u64_array(labels, "labels")
    if arr.shape[0] != n:
        raise ArrayShapeError(f"labels has {arr.shape[0]} elements, starts has {n}")
    if n and arr.max() > 0xFFFFFFFF:
        i = int(np.argmax(arr))
        raise InvalidRangeError(f"labels[{i}] = {int(arr[i])} does not fit in 32 bits")
    return arr.astype(np.uint32)


# Status codes of the C validation loops; bad_index tells which element.
cdef enum:              # answers of classify_many (ExtentMap.FREE, ...)
    K_FREE = 0
    K_WITHIN = 1
    K_COVERED = 2
    K_PARTIAL = 3


cdef enum:
    OK = 0
    ZERO_LENGTH
    START_MISALIGNED
    LENGTH_MISALIGNED
    END_OVERFLOW
    TARGET_OVERFLOW
    OVERLAP_BATCH
    OVERLAP_MAP
    NO_MEMORY


cdef int check_batch(const addr_t* starts, const addr_t* lengths, const addr_t* targets,
                     addr_t* lasts, index_t n, addr_t gmask, index_t* bad) noexcept nogil:
    """Check each range on its own and fill lasts[]; the first bad one goes to *bad."""
    cdef index_t i
    for i in range(n):
        bad[0] = i
        if lengths[i] == 0:
            return ZERO_LENGTH
        if starts[i] & gmask:
            return START_MISALIGNED
        if lengths[i] & gmask:
            return LENGTH_MISALIGNED
        if lengths[i] - 1 > ADDR_MAX - starts[i]:
            return END_OVERFLOW
        if targets != NULL and lengths[i] - 1 > ADDR_MAX - targets[i]:
            return TARGET_OVERFLOW
        lasts[i] = starts[i] + (lengths[i] - 1)
    return OK


cdef int check_sorted_disjoint(const Batch* b, index_t n, index_t* bad, index_t* other) noexcept nogil:
    """Find two neighbours of a sorted batch that overlap."""
    cdef index_t i
    for i in range(1, n):
        if b.starts[i] <= b.lasts[i - 1]:
            bad[0] = i
            other[0] = i - 1
            return OVERLAP_BATCH
    return OK


# ---------------------------------------------------------------------------------------
# Batches of extents (insert_many, from_arrays), in start order
# ---------------------------------------------------------------------------------------

cdef inline addr_t batch_target(const Batch* b, index_t i) noexcept nogil:
    return b.targets[i] if b.targets != NULL else b.starts[i]


cdef inline label_t batch_label(const Batch* b, index_t i) noexcept nogil:
    return b.labels[i] if b.labels != NULL else 0


cdef int sort_batch(Batch* b, const KeyIndex* order, index_t n) noexcept nogil:
    """Replace b's arrays by sorted copies, given the sort order.  Each element is moved by a
    scatter through its rank (sequential reads, scattered writes): on large batches that is
    several times faster than gathering through the order (scattered reads stall, writes
    do not)."""
    cdef index_t k, i, r
    cdef index_t* rank = <index_t*>malloc(n * sizeof(index_t))
    cdef addr_t* starts = <addr_t*>malloc(n * sizeof(addr_t))
    cdef addr_t* lasts = <addr_t*>malloc(n * sizeof(addr_t))
    cdef addr_t* targets = <addr_t*>malloc(n * sizeof(addr_t)) if b.targets != NULL else NULL
    cdef label_t* labels = <label_t*>malloc(n * sizeof(label_t)) if b.labels != NULL else NULL
    if rank == NULL or starts == NULL or lasts == NULL or (b.targets != NULL and targets == NULL) \
            or (b.labels != NULL and labels == NULL):
        free(rank); free(starts); free(lasts); free(targets); free(labels)
        return -1
    for k in range(n):
        rank[order[k].index] = k
        starts[k] = order[k].key
    for i in range(n):
        r = rank[i]
        lasts[r] = b.lasts[i]
        if targets != NULL:
            targets[r] = b.targets[i]
        if labels != NULL:
            labels[r] = b.labels[i]
    free(rank)
    b.starts = starts
    b.lasts = lasts
    b.targets = targets
    b.labels = labels
    b.owned = True
    return 0


cdef void batch_free(Batch* b) noexcept nogil:
    if b.owned:
        free(<void*>b.starts); free(<void*>b.lasts); free(<void*>b.targets); free(<void*>b.labels)
        b.owned = False


# ---------------------------------------------------------------------------------------
# Building leaves in one pass (from_arrays, large insert_many)
# ---------------------------------------------------------------------------------------

# The Builder struct is declared in extentmap.pxd.

cdef inline index_t BUILD_FILL(index_t cap) noexcept nogil:
    return cap - cap // 8


cdef int builder_init(Builder* b, index_t total, index_t cap) noexcept nogil:
    # Leaves start 7/8 full: the first inserts into a leaf then shift a few extents to a
    # neighbour instead of splitting it (memory: 32 bytes per extent instead of 28).
    b.nl = (total + BUILD_FILL(cap) - 1) // BUILD_FILL(cap)
    b.alloc = max(b.nl, 16)
    b.total = total
    b.cap = cap
    b.li = -1
    b.left = 0
    b.written = 0
    b.mapped = 0
    b.prev_last = 0
    b.leaves = <Leaf**>malloc(b.alloc * sizeof(Leaf*))
    b.fence = <addr_t*>malloc(b.alloc * sizeof(addr_t))
    if b.leaves == NULL or b.fence == NULL:
        free(b.leaves)
        free(b.fence)
        return -1
    return 0


cdef int builder_push(Builder* b, addr_t start, addr_t last, addr_t target,
                      label_t label) noexcept nogil:
    """Append the next extent: 0, or 1 if it overlaps the previous one, or -1 out of memory."""
    cdef Leaf* leaf
    if b.written and start <= b.prev_last:
        return 1
    if b.left == 0:
        leaf = leaf_new(b.cap)
        if leaf == NULL:
            return -1
        b.li += 1
        b.leaves[b.li] = leaf
        b.fence[b.li] = start
        # Spread evenly, so that no leaf is left nearly empty.
        b.left = b.total // b.nl + (1 if b.li < b.total % b.nl else 0)
    leaf = b.leaves[b.li]
    leaf_set(leaf, leaf.n, start, last, target, label)
    leaf.n += 1
    b.left -= 1
    b.written += 1
    b.mapped += last - start + 1
    b.prev_last = last
    return 0


cdef void builder_discard(Builder* b) noexcept nogil:
    cdef index_t i
    for i in range(b.li + 1):
        free(b.leaves[i])
    free(b.leaves)
    free(b.fence)


cdef raise_batch_error(int status, index_t i, index_t other, starts, lengths, targets, addr_t granule):
    if status == NO_MEMORY:
        raise MemoryError()
    s = int(starts[i])
    ln = int(lengths[i])
    if status == ZERO_LENGTH:
        raise InvalidRangeError(f"extent {i} at {s:#x} has zero length")
    if status == START_MISALIGNED:
        raise AlignmentError(f"extent {i}: start {s:#x} is not a multiple of the granule {granule:#x}")
    if status == LENGTH_MISALIGNED:
        raise AlignmentError(f"extent {i}: length {ln:#x} is not a multiple of the granule {granule:#x}")
    if status == END_OVERFLOW:
        raise InvalidRangeError(f"extent {i}: {s:#x} + {ln:#x} ends past 2**64")
    if status == TARGET_OVERFLOW:
        raise InvalidRangeError(f"extent {i}: target {int(targets[i]):#x} + length {ln:#x} ends past 2**64")
    if status == OVERLAP_BATCH:
        o = int(starts[other])
        raise OverlapError(f"extent {i} [{s:#x}, {s + ln:#x}) overlaps extent {other} "
                           f"[{o:#x}, {o + int(lengths[other]):#x}) of the same batch")
    if status == OVERLAP_MAP:
        raise OverlapError(f"extent {i} [{s:#x}, {s + ln:#x}) overlaps an extent already in the map")
    raise AssertionError(status)


# ---------------------------------------------------------------------------------------
# Batch queries: one C loop for translate_many, lookup_many and contains_many
# ---------------------------------------------------------------------------------------

cdef bint finger_find(const MapView* v, Finger* f, addr_t addr) noexcept nogil:
    """Find the extent holding addr, starting from the finger's previous answer: gallop
    forward within the leaf or across leaves, search backward from scratch.  Leaves the finger
    on the extent (found) or the last extent starting at or before addr (f.li = -1 if none)."""
    cdef Leaf* leaf
    if v.nleaves == 0:
        f.li = -1
        return False
    if f.li >= 0 and f.li < v.nleaves and addr >= v.fence[f.li]:
        leaf = v.leaves[f.li]
        if f.li + 1 < v.nleaves and addr >= v.fence[f.li + 1]:
            f.li = gallop_le(v.fence, f.li + 1, v.nleaves, addr)
            leaf = v.leaves[f.li]
            f.j = gallop_le(leaf.start, 0, leaf.n, addr)
        elif f.j < leaf.n and addr >= leaf.start[f.j]:
            # Sorted batches mostly land in the same extent, or the hole after it, or the
            # next extent: settle those before galloping.
            if addr > leaf.last[f.j]:
                if f.j + 1 < leaf.n and addr >= leaf.start[f.j + 1]:
                    f.j = gallop_le(leaf.start, f.j + 1, leaf.n, addr)
                else:
                    return False
        else:
            f.j = last_le(leaf.start, 0, f.j if f.j < leaf.n else leaf.n, addr)
        return addr <= leaf.last[f.j]
    f.li = last_le(v.fence, 0, f.li if 0 <= f.li < v.nleaves else v.nleaves, addr)
    if f.li < 0:
        return False
    leaf = v.leaves[f.li]
    f.j = last_le(leaf.start, 0, leaf.n, addr)
    return addr <= leaf.last[f.j]


cdef index_t query_batch(ExtentMap m, const addr_t* q, index_t n, QueryMode mode,
                         addr_t* out_addr, int64_t* out_index, uint8_t* out_found,
                         bint fill, addr_t fill_value) noexcept nogil:
    """Answer n queries; return the caller's index of the first unmapped address when
    translating without a fill value (-1 if none), or -2 when out of memory."""
    cdef KeyIndex* order = NULL
    cdef index_t k, pos, first_bad = -1
    cdef addr_t addr
    cdef bint found
    cdef Finger f
    cdef Leaf* leaf
    f.li = -1
    f.j = 0
    cdef bint failed = False
    # Sorting pays only when the map is too big for the cache and the batch is not tiny.
    if n >= SORT_MIN and m.count >= SORT_MAP_MIN:
        order = locality_order(q, n, &failed)
        if failed:
            return -2
    for k in range(n):
        if order != NULL:
            addr = order[k].key
            pos = order[k].index
        else:
            addr = q[k]
            pos = k
        found = finger_find(&m.v, &f, addr)
        leaf = m.v.leaves[f.li] if found else NULL
        if mode == Q_TRANSLATE:
            if found:
                out_addr[pos] = leaf.target[f.j] + (addr - leaf.start[f.j])
            elif fill:
                out_addr[pos] = fill_value
            elif first_bad < 0 or pos < first_bad:
                first_bad = pos
        elif mode == Q_LOOKUP:
            out_index[pos] = m.prefix[f.li] + f.j if found else -1
        elif mode == Q_LABEL:
            out_index[pos] = leaf.label[f.j] if found else -1
        else:
            out_found[pos] = found
    free(order)
    return first_bad


# ---------------------------------------------------------------------------------------
# The map
# ---------------------------------------------------------------------------------------

@cython.final
cdef class ExtentMap:
    """An ordered map of non-overlapping ranges ``[start, start + length)`` of the 64-bit space.

    Each range (an *extent*) translates to ``target`` (default: its own start) and carries a
    ``label`` (a uint32 the caller assigns: a tag index, a host id, ...).  Every start and
    length is a multiple of ``granule`` (a power of two, default 64); an extent may end at
    2**64 exactly.  Storage is a chunked sorted array in C (see ``docs/implementation.md``):
    about 28 bytes per extent, no Python object per extent.

    >>> m = ExtentMap(granule=64)
    >>> m.insert(0x1000, 0x200, target=0x9000, label=7)
    >>> m.translate(0x1040)
    36928
    >>> hex(m.translate(0x1040))
    '0x9040'
    >>> m.lookup(0x11ff)
    Extent(start=4096, length=512, target=36864, label=7)
    >>> m.remove(0x1080, 0x40)                 # punch a hole: the extent splits in two
    64
    >>> len(m), m.mapped_bytes
    (2, 448)
    >>> m.translate_many([0x1000, 0x10c0]).tolist()
    [36864, 37056]

    Errors are dcdmap errors (see :mod:`dcdmap.errors`) that name the offending value; a
    failed call leaves the map as it was.

    Threads: batch reads release the GIL and may run from several threads at once; a
    mutation while one runs raises :class:`~dcdmap.errors.ConcurrentModificationError`.
    """

    def __cinit__(self):
        self.v.leaves = NULL
        self.v.fence = NULL
        self.prefix = NULL
        self.v.nleaves = 0
        self.leaves_alloc = 0
        self.count = 0
        self.mapped = 0
        self.prefix_ok = False
        self.readers = 0
        self.writing = False
        self.version = 0
        self.cap = DEFAULT_LEAF_CAPACITY
        self.granule = 64

    def __init__(self, granule=64, *, leaf_capacity=DEFAULT_LEAF_CAPACITY):
        cdef addr_t g = to_u64(granule, "granule")
        if g == 0 or (g & (g - 1)) != 0:
            raise InvalidRangeError(f"granule {granule} is not a power of two")
        if not isinstance(leaf_capacity, int) or isinstance(leaf_capacity, bool):
            raise InputTypeError(f"leaf_capacity must be an int, not {type(leaf_capacity).__name__}")
        if not 4 <= leaf_capacity <= 1 << 20:
            raise InvalidRangeError(f"leaf_capacity {leaf_capacity!r} is not an int in 4 .. 2**20")
        if self.count:
            raise ConcurrentModificationError("ExtentMap.__init__ called on a map in use")
        self.granule = g
        self.cap = leaf_capacity

    def __dealloc__(self):
        self.free_all()
        free(self.v.leaves)
        free(self.v.fence)
        free(self.prefix)

    cdef void free_all(self) noexcept nogil:
        cdef index_t i
        for i in range(self.v.nleaves):
            free(self.v.leaves[i])
        self.v.nleaves = 0
        self.count = 0
        self.mapped = 0
        self.prefix_ok = False

    # ------------------------------------------------------------------ properties

    @property
    def granule(self):
        """Every start and length is a multiple of this power of two."""
        return self.granule

    @property
    def leaf_capacity(self):
        """Extents per leaf of the underlying structure (a tuning knob; tests make it small)."""
        return self.cap

    @property
    def mapped_bytes(self):
        """Total bytes covered by the extents (an int up to 2**64)."""
        self.check_not_writing()
        # mapped is kept modulo 2**64; it is zero only if the map is empty or covers everything.
        if self.mapped == 0 and self.count:
            return SPACE_END
        return self.mapped

    @property
    def nbytes(self):
        """Bytes of memory the map holds (leaves, top-level arrays, caches)."""
        cdef size_t total = <size_t>self.v.nleaves * leaf_size(self.cap)
        total += <size_t>self.leaves_alloc * (sizeof(Leaf*) + sizeof(addr_t))
        if self.prefix != NULL:
            total += <size_t>(self.leaves_alloc + 1) * sizeof(index_t)
        return total

    def __len__(self):
        return self.count

    def __repr__(self):
        return (f"ExtentMap(granule={self.granule}, extents={self.count}, "
                f"mapped_bytes={self.mapped_bytes})")

    # ------------------------------------------------------------------ guards

    cdef int check_not_writing(self) except -1:
        if self.writing:
            raise ConcurrentModificationError("the map is being modified by another thread")
        return 0

    cdef int check_mutable(self) except -1:
        if self.writing or self.readers:
            raise ConcurrentModificationError(
                "the map cannot change while another thread runs a batch call on it")
        return 0

    cdef int begin_read(self) except -1:
        self.check_not_writing()
        self.readers += 1
        return 0

    cdef int begin_write(self) except -1:
        self.check_mutable()
        self.writing = True
        return 0

    cdef int changed(self) except -1:
        self.prefix_ok = False
        self.version += 1
        if DCDMAP_DEBUG:
            self.check_invariants()
        return 0

    # ------------------------------------------------------------------ C core

    cdef index_t find_leaf(self, addr_t addr) noexcept nogil:
        return last_le(self.v.fence, 0, self.v.nleaves, addr)

    cdef bint locate(self, addr_t addr, index_t* li, index_t* j) noexcept nogil:
        cdef index_t i = self.find_leaf(addr)
        cdef Leaf* leaf
        if i < 0:
            return False
        leaf = self.v.leaves[i]
        li[0] = i
        j[0] = last_le(leaf.start, 0, leaf.n, addr)
        return addr <= leaf.last[j[0]]

    cdef bint translate_c(self, addr_t addr, addr_t* out) noexcept nogil:
        cdef index_t li, j
        cdef Leaf* leaf
        if not self.locate(addr, &li, &j):
            return False
        leaf = self.v.leaves[li]
        out[0] = leaf.target[j] + (addr - leaf.start[j])
        return True

    cdef bint overlaps(self, addr_t start, addr_t last) noexcept nogil:
        # The extent with the greatest start <= last is the only one that can reach start.
        cdef index_t li = self.find_leaf(last)
        cdef Leaf* leaf
        if li < 0:
            return False
        leaf = self.v.leaves[li]
        return leaf.last[last_le(leaf.start, 0, leaf.n, last)] >= start

    cdef int grow_top(self, index_t need) noexcept nogil:
        cdef index_t alloc = self.leaves_alloc
        cdef Leaf** leaves
        cdef addr_t* fence
        if need <= alloc:
            return 0
        alloc = max(need, alloc * 2, 16)
        leaves = <Leaf**>realloc(self.v.leaves, alloc * sizeof(Leaf*))
        if leaves == NULL:
            return -1
        self.v.leaves = leaves
        fence = <addr_t*>realloc(self.v.fence, alloc * sizeof(addr_t))
        if fence == NULL:
            return -1
        self.v.fence = fence
        self.leaves_alloc = alloc
        free(self.prefix)           # sized by leaves_alloc; rebuilt on demand
        self.prefix = NULL
        self.prefix_ok = False
        return 0

    cdef int split_leaf(self, index_t li, index_t h) noexcept nogil:
        """Move slots [h, n) of leaf li into a new leaf li + 1."""
        cdef Leaf* left = self.v.leaves[li]
        cdef Leaf* right
        if self.grow_top(self.v.nleaves + 1) < 0:
            return -1
        right = leaf_new(self.cap)
        if right == NULL:
            return -1
        leaf_move(right, 0, left, h, left.n - h)
        right.n = left.n - h
        left.n = h
        memmove(&self.v.leaves[li + 2], &self.v.leaves[li + 1], (self.v.nleaves - li - 1) * sizeof(Leaf*))
        memmove(&self.v.fence[li + 2], &self.v.fence[li + 1], (self.v.nleaves - li - 1) * sizeof(addr_t))
        self.v.leaves[li + 1] = right
        self.v.fence[li + 1] = right.start[0]
        self.v.nleaves += 1
        return 0

    cdef void drop_leaves(self, index_t first, index_t stop) noexcept nogil:
        """Free leaves [first, stop) and close the gap in the top arrays."""
        cdef index_t i
        if stop <= first:
            return
        for i in range(first, stop):
            free(self.v.leaves[i])
        memmove(&self.v.leaves[first], &self.v.leaves[stop], (self.v.nleaves - stop) * sizeof(Leaf*))
        memmove(&self.v.fence[first], &self.v.fence[stop], (self.v.nleaves - stop) * sizeof(addr_t))
        self.v.nleaves -= stop - first

    cdef void rebalance(self, index_t li) noexcept nogil:
        """Keep leaf li at least a quarter full: merge it with a neighbour, or borrow from one."""
        cdef index_t a, want
        cdef Leaf* left
        cdef Leaf* right
        if self.v.nleaves < 2 or li < 0 or li >= self.v.nleaves or self.v.leaves[li].n >= self.cap // 4:
            return
        a = li if li + 1 < self.v.nleaves else li - 1
        left = self.v.leaves[a]
        right = self.v.leaves[a + 1]
        if left.n + right.n <= self.cap:
            leaf_move(left, left.n, right, 0, right.n)
            left.n += right.n
            self.drop_leaves(a + 1, a + 2)
            return
        want = (left.n + right.n) // 2        # left's share after the move
        if left.n < want:
            leaf_move(left, left.n, right, 0, want - left.n)
            leaf_move(right, 0, right, want - left.n, right.n - (want - left.n))
            right.n -= want - left.n
        else:
            leaf_move(right, left.n - want, right, 0, right.n)
            leaf_move(right, 0, left, want, left.n - want)
            right.n += left.n - want
        left.n = want
        self.v.fence[a + 1] = right.start[0]

    cdef inline index_t min_spare(self) noexcept nogil:
        """Free slots a neighbour needs before a full leaf passes it a share (at least 2, so
        that both leaves keep room for the new extent)."""
        return max(2, self.cap // 8)

    cdef int insert_c(self, addr_t start, addr_t last, addr_t target, label_t label) noexcept nogil:
        """Insert a checked extent: 0; 1 (nothing changed) if it overlaps an extent of the
        map; -1 out of memory.  One search finds both the neighbours and the slot."""
        cdef index_t li, j, h, k
        cdef Leaf* leaf
        cdef Leaf* other
        if self.v.nleaves == 0:
            if self.grow_top(1) < 0:
                return -1
            leaf = leaf_new(self.cap)
            if leaf == NULL:
                return -1
            self.v.leaves[0] = leaf
            self.v.nleaves = 1
            li = j = 0
        else:
            li = self.find_leaf(start)
            if li < 0:
                li = j = 0
            else:
                leaf = self.v.leaves[li]
                j = last_le(leaf.start, 0, leaf.n, start) + 1
                if leaf.last[j - 1] >= start:
                    return 1                        # the extent before reaches into it
            leaf = self.v.leaves[li]
            # The extent after it, in this leaf or the next, must start past its last byte.
            if j < leaf.n:
                if leaf.start[j] <= last:
                    return 1
            elif li + 1 < self.v.nleaves and self.v.fence[li + 1] <= last:
                return 1
            if leaf.n == self.cap:
                # Full: pass a share to a neighbour with room (no new leaf, no top-level move),
                # else split (appending to a full leaf, the ascending pattern, keeps it 3/4 full).
                if li + 1 < self.v.nleaves and self.cap - self.v.leaves[li + 1].n >= self.min_spare():
                    other = self.v.leaves[li + 1]
                    k = (self.cap - other.n) // 2     # both keep room for the new extent
                    leaf_move(other, k, other, 0, other.n)
                    leaf_move(other, 0, leaf, self.cap - k, k)
                    other.n += k
                    leaf.n -= k
                    self.v.fence[li + 1] = other.start[0]
                    if j > leaf.n:
                        j -= leaf.n
                        li += 1
                        leaf = other
                elif li > 0 and self.cap - self.v.leaves[li - 1].n >= self.min_spare():
                    other = self.v.leaves[li - 1]
                    k = (self.cap - other.n) // 2
                    leaf_move(other, other.n, leaf, 0, k)
                    leaf_move(leaf, 0, leaf, k, leaf.n - k)
                    leaf.n -= k
                    self.v.fence[li] = leaf.start[0]
                    if j < k:
                        j += other.n
                        li -= 1
                        other.n += k
                        leaf = other
                    else:
                        other.n += k
                        j -= k
                else:
                    h = self.cap - self.cap // 4 if j == self.cap else self.cap // 2
                    if self.split_leaf(li, h) < 0:
                        return -1
                    if j > h:
                        li += 1
                        j -= h
                    leaf = self.v.leaves[li]
        leaf_move(leaf, j + 1, leaf, j, leaf.n - j)
        leaf_set(leaf, j, start, last, target, label)
        leaf.n += 1
        if j == 0:
            self.v.fence[li] = start
        self.count += 1
        self.mapped += last - start + 1
        return 0

    cdef int remove_c(self, addr_t start, addr_t last, addr_t* removed) noexcept nogil:
        """Unmap [start, last], splitting extents that straddle either end."""
        cdef index_t li, j, k, t, i, first_empty, deleted = 0
        cdef addr_t gone = 0, cut
        cdef Leaf* leaf
        removed[0] = 0
        if self.v.nleaves == 0:
            return 0
        li = self.find_leaf(start)
        if li < 0:
            li = j = 0
        else:
            leaf = self.v.leaves[li]
            j = last_le(leaf.start, 0, leaf.n, start)
            if leaf.last[j] < start:
                j += 1
            elif leaf.start[j] < start:
                if leaf.last[j] > last:
                    # The range lies inside one extent: split it around the hole.
                    if leaf.n == self.cap:
                        if self.split_leaf(li, self.cap // 2) < 0:
                            return -1
                        if j >= self.cap // 2:
                            li += 1
                            j -= self.cap // 2
                        leaf = self.v.leaves[li]
                    leaf_move(leaf, j + 2, leaf, j + 1, leaf.n - j - 1)
                    leaf_set(leaf, j + 1, last + 1, leaf.last[j],
                             leaf.target[j] + (last + 1 - leaf.start[j]), leaf.label[j])
                    leaf.last[j] = start - 1
                    leaf.n += 1
                    self.count += 1
                    removed[0] = last - start + 1
                    self.mapped -= removed[0]
                    return 0
                gone = leaf.last[j] - start + 1
                leaf.last[j] = start - 1
                j += 1
            if j == leaf.n:
                li += 1
                j = 0
        # Delete the extents that lie wholly inside, leaf by leaf; trim the one straddling `last`.
        i = li
        while i < self.v.nleaves:
            leaf = self.v.leaves[i]
            # The run of whole extents ends where lasts pass `last`; usually it is short, so
            # gallop from j (cache lines next to j) instead of bisecting the leaf.
            k = j if leaf.last[j] > last else gallop_le(leaf.last, j, leaf.n, last) + 1
            for t in range(j, k):
                gone += leaf.last[t] - leaf.start[t] + 1
            leaf_move(leaf, j, leaf, k, leaf.n - k)
            leaf.n -= k - j
            deleted += k - j
            if leaf.n > j:
                if leaf.start[j] <= last:
                    cut = last + 1 - leaf.start[j]
                    gone += cut
                    leaf.start[j] += cut
                    leaf.target[j] += cut
                if j == 0:
                    self.v.fence[i] = leaf.start[0]
                break
            i += 1
            j = 0
        # Leaves emptied on the way are contiguous, from li (or li + 1 if li kept some) to i.
        if li < self.v.nleaves:
            first_empty = li if self.v.leaves[li].n == 0 else li + 1
            self.drop_leaves(first_empty, min(i, self.v.nleaves))
            self.rebalance(first_empty)
            if first_empty > li:
                self.rebalance(li)
        self.count -= deleted
        self.mapped -= gone
        removed[0] = gone
        return 0

    cdef void install(self, Builder* b) noexcept nogil:
        """Replace the map's contents by what the builder wrote."""
        self.free_all()
        free(self.v.leaves)
        free(self.v.fence)
        free(self.prefix)
        self.prefix = NULL
        self.v.leaves = b.leaves
        self.v.fence = b.fence
        self.leaves_alloc = b.alloc
        self.v.nleaves = b.li + 1
        self.count = b.written
        self.mapped = b.mapped

    cdef int ensure_prefix(self) except -1:
        cdef index_t i, total = 0
        if self.prefix_ok:
            return 0
        if self.prefix == NULL:
            self.prefix = <index_t*>malloc((self.leaves_alloc + 1) * sizeof(index_t))
            if self.prefix == NULL:
                raise MemoryError()
        for i in range(self.v.nleaves):
            self.prefix[i] = total
            total += self.v.leaves[i].n
        self.prefix[self.v.nleaves] = total
        self.prefix_ok = True
        return 0

    cdef int check_range(self, start, length, addr_t* first, addr_t* last) except -1:
        """Store start and last byte of a valid range, or raise the error that names what is wrong."""
        cdef addr_t s = to_u64(start, "start")
        cdef addr_t n = to_u64(length, "length")
        if n == 0:
            raise InvalidRangeError(f"zero length at start {s:#x}")
        if s & (self.granule - 1):
            raise AlignmentError(f"start {s:#x} is not a multiple of the granule {self.granule:#x}")
        if n & (self.granule - 1):
            raise AlignmentError(f"length {n:#x} is not a multiple of the granule {self.granule:#x}")
        if n - 1 > ADDR_MAX - s:
            raise InvalidRangeError(f"range {s:#x} + {n:#x} ends past 2**64")
        first[0] = s
        last[0] = s + (n - 1)
        return 0

    cdef object make_extent(self, Leaf* leaf, index_t j):
        return make_extent(leaf, j)

    # ------------------------------------------------------------------ scalar API

    def insert(self, start, length, target=None, label=0):
        """Map ``[start, start + length)`` to ``target`` (default: ``start``) with ``label``.

        O(log n) plus a memmove within one leaf.  Raises AlignmentError, InvalidRangeError
        (zero length, negative, past 2**64, label over 32 bits) or OverlapError.

        >>> m = ExtentMap()
        >>> m.insert(0, 128)
        >>> m.insert(64, 64)
        Traceback (most recent call last):
        ...
        dcdmap.errors.OverlapError: [0x40, 0x80) overlaps [0x0, 0x80), already in the map
        """
        cdef addr_t s, last, t
        cdef label_t lab
        cdef index_t li, j
        cdef int status
        self.check_range(start, length, &s, &last)
        t = s if target is None else to_u64(target, "target")
        if last - s > ADDR_MAX - t:
            raise InvalidRangeError(f"target {t:#x} + length {last - s + 1:#x} ends past 2**64")
        cdef addr_t lab64 = to_u64(label, "label")
        if lab64 > 0xFFFFFFFF:
            raise InvalidRangeError(f"label {lab64} does not fit in 32 bits")
        lab = <label_t>lab64
        self.check_mutable()
        status = self.insert_c(s, last, t, lab)
        if status == 1:
            li = self.find_leaf(last)
            j = last_le(self.v.leaves[li].start, 0, self.v.leaves[li].n, last)
            old = self.make_extent(self.v.leaves[li], j)
            raise OverlapError(f"[{s:#x}, {last + 1:#x}) overlaps [{old.start:#x}, "
                               f"{old.start + old.length:#x}), already in the map")
        if status < 0:
            raise MemoryError()
        self.changed()

    def remove(self, start, length):
        """Unmap ``[start, start + length)`` and return the number of bytes that were mapped there.

        Extents that straddle either end are cut (a hole in the middle of one extent splits
        it in two, the right part's target advanced); unmapped parts of the range are fine.
        O(log n + k) for k extents removed.
        """
        cdef addr_t s, last, gone
        self.check_range(start, length, &s, &last)
        self.check_mutable()
        if self.remove_c(s, last, &gone) < 0:
            raise MemoryError()
        self.changed()
        return gone

    def lookup(self, addr):
        """The :class:`Extent` holding ``addr``, or None.  O(log n)."""
        cdef addr_t a = to_u64(addr, "address")
        cdef index_t li, j
        self.check_not_writing()
        if self.locate(a, &li, &j):
            return self.make_extent(self.v.leaves[li], j)
        return None

    def translate(self, addr):
        """``target + (addr - start)`` of the extent holding ``addr``; UnmappedError if none."""
        cdef addr_t a = to_u64(addr, "address")
        cdef addr_t out
        self.check_not_writing()
        if self.translate_c(a, &out):
            return out
        raise UnmappedError(f"address {a:#x} is not mapped")

    def __contains__(self, addr):
        """``addr in m``: whether the address is mapped."""
        cdef addr_t a = to_u64(addr, "address")
        cdef index_t li, j
        self.check_not_writing()
        return self.locate(a, &li, &j)

    def __getitem__(self, index):
        """The extent at position ``index`` in address order (negative counts from the end)."""
        cdef index_t i, li
        k = operator.index(index)
        if k < 0:
            k += self.count
        if not 0 <= k < self.count:
            raise IndexError(f"extent index {index} out of range for {self.count} extents")
        i = k
        self.check_not_writing()
        self.ensure_prefix()
        li = self.leaf_of_rank(i)
        return self.make_extent(self.v.leaves[li], i - self.prefix[li])

    cdef index_t leaf_of_rank(self, index_t i) noexcept:
        """The leaf holding the extent of rank i (prefix must be valid)."""
        cdef index_t lo = 0, hi = self.v.nleaves, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.prefix[mid] <= i:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1

    def overlapping(self, start, length):
        """The extents that meet ``[start, start + length)``, whole (not clipped), as ExtentArrays."""
        cdef addr_t s, last
        cdef index_t k, n = 0
        cdef Finger f, f0
        cdef bint more
        self.check_range(start, length, &s, &last)
        self.check_not_writing()
        more = seek(&self.v, s, &f0)
        f = f0
        while more and self.v.leaves[f.li].start[f.j] <= last:      # count, then fill
            n += 1
            more = advance(&self.v, &f)
        out = ExtentArrays(np.empty(n, np.uint64), np.empty(n, np.uint64),
                           np.empty(n, np.uint64), np.empty(n, np.uint32))
        cdef addr_t[::1] os = out.starts, ol = out.lengths, ot = out.targets
        cdef label_t[::1] ob = out.labels
        cdef Leaf* leaf
        f = f0
        for k in range(n):
            leaf = self.v.leaves[f.li]
            os[k] = leaf.start[f.j]
            ol[k] = leaf.last[f.j] - leaf.start[f.j] + 1
            ot[k] = leaf.target[f.j]
            ob[k] = leaf.label[f.j]
            advance(&self.v, &f)
        return out

    def gaps(self, lo=0, hi=SPACE_END):
        """The unmapped holes inside ``[lo, hi)``, as Ranges (starts, lengths), in address order.

        ``hi`` may be 2**64.  A hole of 2**64 bytes (an empty map, the whole space) cannot be
        told in a uint64 length and raises InvalidRangeError.
        """
        cdef addr_t a, b_last
        cdef index_t n
        a, b_last = self.window(lo, hi)
        self.check_not_writing()
        if self.count == 0 and a == 0 and b_last == ADDR_MAX:
            raise InvalidRangeError("the hole [0, 2**64) has a length that does not fit in 64 bits")
        n = self.holes(a, b_last, NULL, NULL)               # count, then fill
        out = Ranges(np.empty(n, np.uint64), np.empty(n, np.uint64))
        cdef addr_t[::1] os = out.starts, ol = out.lengths
        if n:
            self.holes(a, b_last, &os[0], &ol[0])
        return out

    cdef index_t holes(self, addr_t a, addr_t b_last, addr_t* starts, addr_t* lengths) noexcept nogil:
        """Count the holes in [a, b_last], and store them when starts is not NULL."""
        cdef index_t n = 0
        cdef addr_t cur = a          # the first byte not yet accounted for
        cdef Finger f
        cdef Leaf* leaf
        cdef bint more = seek(&self.v, a, &f)
        while more:
            leaf = self.v.leaves[f.li]
            if leaf.start[f.j] > b_last:
                break
            if leaf.start[f.j] > cur:
                if starts != NULL:
                    starts[n] = cur
                    lengths[n] = leaf.start[f.j] - cur
                n += 1
            if leaf.last[f.j] >= b_last:
                return n              # covered up to the window's end
            cur = leaf.last[f.j] + 1
            more = advance(&self.v, &f)
        if starts != NULL:
            starts[n] = cur
            lengths[n] = b_last - cur + 1
        return n + 1

    cdef tuple window(self, lo, hi):
        """(lo, hi - 1) of a window [lo, hi) with lo < hi <= 2**64."""
        cdef addr_t a = to_u64(lo, "lo")
        if isinstance(hi, int) and hi == SPACE_END:
            b_last = ADDR_MAX
        else:
            b_last = to_u64(hi, "hi")
            if b_last == 0:
                raise InvalidRangeError("hi 0 leaves an empty window")
            b_last -= 1
        if a > b_last:
            raise InvalidRangeError(f"empty window: lo {a:#x} >= hi {b_last + 1:#x}")
        return a, b_last

    def find_free(self, length, align=None, lo=0, hi=SPACE_END):
        """The lowest start ``s >= lo``, a multiple of ``align`` (default: the granule), with
        ``[s, s + length)`` unmapped and ending at or before ``hi``; None if there is none.

        O(log n + k) for k extents skipped on the way.

        >>> m = ExtentMap()
        >>> m.insert(0, 4096)
        >>> m.find_free(8192, align=8192)
        8192
        """
        cdef addr_t n = to_u64(length, "length"), al, cur, a, b_last, end_last
        cdef Finger f
        cdef bint more
        cdef Leaf* leaf
        if n == 0 or n & (self.granule - 1):
            if n == 0:
                raise InvalidRangeError("find_free: zero length")
            raise AlignmentError(f"length {n:#x} is not a multiple of the granule {self.granule:#x}")
        al = self.granule if align is None else to_u64(align, "align")
        if al == 0 or al & (al - 1) or al < self.granule:
            raise AlignmentError(f"align {al:#x} must be a power of two >= the granule {self.granule:#x}")
        a, b_last = self.window(lo, hi)
        self.check_not_writing()
        # cur = a rounded up to al
        if a & (al - 1):
            if (a | (al - 1)) == ADDR_MAX:
                return None
            a = (a | (al - 1)) + 1
        cur = a
        more = seek(&self.v, cur, &f)
        while True:
            if n - 1 > ADDR_MAX - cur:
                return None
            end_last = cur + (n - 1)
            if end_last > b_last:
                return None
            if not more:
                return cur
            leaf = self.v.leaves[f.li]
            if leaf.start[f.j] > end_last:
                return cur
            # Blocked by this extent: jump past it, rounded up; skip what ends before that.
            if (leaf.last[f.j] | (al - 1)) == ADDR_MAX:
                return None
            cur = (leaf.last[f.j] | (al - 1)) + 1
            more = advance(&self.v, &f)
            while more and self.v.leaves[f.li].last[f.j] < cur:
                more = advance(&self.v, &f)

    def coalesce(self):
        """Merge neighbours that touch, carry the same label and whose targets continue.

        Returns the number of merges.  O(n); leaves come out full.

        >>> m = ExtentMap()
        >>> m.insert(0, 64, target=1000); m.insert(64, 64, target=1064)
        >>> m.coalesce(), len(m)
        (1, 1)
        """
        cdef index_t ri, rj, wi = 0, wj = -1, merges = 0, keep
        cdef Leaf* src
        cdef Leaf* dst
        self.check_mutable()
        if self.count == 0:
            return 0
        # Repack in place: the write cursor (wi, wj) never passes the read cursor (ri, rj).
        dst = self.v.leaves[0]
        for ri in range(self.v.nleaves):
            src = self.v.leaves[ri]
            for rj in range(src.n):
                if wj >= 0 and continues(dst, wj, src, rj):
                    dst.last[wj] = src.last[rj]
                    merges += 1
                    continue
                wj += 1
                if wj == self.cap:
                    dst.n = self.cap
                    wi += 1
                    wj = 0
                    dst = self.v.leaves[wi]
                leaf_set(dst, wj, src.start[rj], src.last[rj], src.target[rj], src.label[rj])
        dst.n = wj + 1
        for keep in range(wi):
            self.v.leaves[keep].n = self.cap
        self.drop_leaves(wi + 1, self.v.nleaves)
        for keep in range(self.v.nleaves):
            self.v.fence[keep] = self.v.leaves[keep].start[0]
        self.rebalance(self.v.nleaves - 1)
        self.count -= merges
        self.changed()
        return merges

    def clear(self):
        """Remove every extent."""
        self.check_mutable()
        self.free_all()
        self.changed()

    def copy(self):
        """An independent copy of the map (same granule and leaf capacity)."""
        cdef ExtentMap other = ExtentMap(self.granule, leaf_capacity=self.cap)
        cdef index_t i
        self.check_not_writing()
        if other.grow_top(self.v.nleaves) < 0:
            raise MemoryError()
        for i in range(self.v.nleaves):
            other.v.leaves[i] = leaf_new(self.cap)
            if other.v.leaves[i] == NULL:
                raise MemoryError()
            other.v.nleaves = i + 1
            memcpy(other.v.leaves[i] + 1, self.v.leaves[i] + 1, leaf_size(self.cap) - sizeof(Leaf))
            other.v.leaves[i].n = self.v.leaves[i].n
            other.v.fence[i] = self.v.fence[i]
        other.count = self.count
        other.mapped = self.mapped
        return other

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        return (restore, (self.to_bytes(), self.cap))

    def __iter__(self):
        """The extents in address order, as :class:`Extent` tuples.

        Mutating the map while iterating raises ConcurrentModificationError.
        """
        cdef Py_ssize_t version = self.version
        cdef index_t li = 0, j = 0
        while li < self.v.nleaves:
            self.check_not_writing()
            yield self.make_extent(self.v.leaves[li], j)
            # The caller ran in between: the map may be mid-batch, or changed.
            self.check_not_writing()
            if self.version != version:
                raise ConcurrentModificationError("the map changed during iteration")
            j += 1
            if j >= self.v.leaves[li].n:
                li += 1
                j = 0

    def __eq__(self, other):
        cdef ExtentMap o
        cdef index_t ai = 0, aj = 0, bi = 0, bj = 0, k
        cdef Leaf* a
        cdef Leaf* b
        if not isinstance(other, ExtentMap):
            return NotImplemented
        o = other
        self.check_not_writing()
        o.check_not_writing()
        if self.granule != o.granule or self.count != o.count or self.mapped != o.mapped:
            return False
        for k in range(self.count):
            a = self.v.leaves[ai]
            b = o.v.leaves[bi]
            if (a.start[aj] != b.start[bj] or a.last[aj] != b.last[bj]
                    or a.target[aj] != b.target[bj] or a.label[aj] != b.label[bj]):
                return False
            aj += 1
            bj += 1
            if aj == a.n:
                ai += 1
                aj = 0
            if bj == b.n:
                bi += 1
                bj = 0
        return True

    __hash__ = None

    # ------------------------------------------------------------------ batch API

    def translate_many(self, addrs, missing=None):
        """Translate every address of ``addrs`` (uint64 array-like) in one C loop without the GIL.

        Unmapped addresses raise UnmappedError naming the first (in the caller's order), or,
        with ``missing=value``, come out as that value.  Returns a new uint64 array.
        """
        cdef const addr_t[::1] q
        cdef addr_t[::1] out
        cdef addr_t fill_value = 0
        cdef bint fill = missing is not None
        cdef index_t n, bad
        arr = as_u64_array(addrs, "addrs")
        if fill:
            fill_value = to_u64(missing, "missing")
        n = arr.shape[0]
        result = np.empty(n, dtype=np.uint64)
        out = result
        q = arr
        self.begin_read()
        try:
            with nogil:
                bad = query_batch(self, &q[0] if n else NULL, n, Q_TRANSLATE, &out[0] if n else NULL,
                                  NULL, NULL, fill, fill_value)
        finally:
            self.readers -= 1
        if bad == -2:
            raise MemoryError()
        if bad >= 0:
            raise UnmappedError(f"addrs[{bad}] = {int(arr[bad]):#x} is not mapped")
        return result

    cdef index_query(self, addrs, QueryMode mode):
        """lookup_many / labels_many / contains_many: one query loop, int64 (or bool) out."""
        cdef const addr_t[::1] q
        cdef int64_t[::1] out_index
        cdef uint8_t[::1] out_found
        cdef int64_t* pi = NULL
        cdef uint8_t* pf = NULL
        cdef index_t n, bad
        arr = as_u64_array(addrs, "addrs")
        n = arr.shape[0]
        result = np.empty(n, dtype=np.bool_ if mode == Q_CONTAINS else np.int64)
        if n:
            if mode == Q_CONTAINS:
                out_found = result.view(np.uint8)
                pf = &out_found[0]
            else:
                out_index = result
                pi = &out_index[0]
        q = arr
        self.begin_read()
        try:
            if mode == Q_LOOKUP:
                self.ensure_prefix()
            with nogil:
                bad = query_batch(self, &q[0] if n else NULL, n, mode, NULL, pi, pf, False, 0)
        finally:
            self.readers -= 1
        if bad == -2:
            raise MemoryError()
        return result

    def lookup_many(self, addrs):
        """For each address, the index (in address order, as ``m[i]``) of the extent holding it,
        or -1.  Returns a new int64 array."""
        return self.index_query(addrs, Q_LOOKUP)

    def labels_many(self, addrs):
        """For each address, the label of the extent holding it, or -1.  Returns a new int64
        array.

        >>> m = ExtentMap(); m.insert(0, 0x40, label=7)
        >>> m.labels_many([0, 0x40]).tolist()
        [7, -1]
        """
        return self.index_query(addrs, Q_LABEL)

    def contains_many(self, addrs):
        """For each address, whether it is mapped.  Returns a new bool array."""
        return self.index_query(addrs, Q_CONTAINS)

    # Answers of classify_many: how a range meets the map.
    FREE = K_FREE        # no byte of the range is mapped
    WITHIN = K_WITHIN    # the whole range lies inside one extent
    COVERED = K_COVERED  # every byte is mapped, by two or more extents that touch
    PARTIAL = K_PARTIAL  # some bytes are mapped and some are not

    def classify_many(self, starts, lengths):
        """For each range ``[starts[i], starts[i] + lengths[i])``, how it meets the map:
        ``ExtentMap.FREE``, ``WITHIN`` (inside one extent), ``COVERED`` (all mapped, by several
        extents) or ``PARTIAL``.  Returns a new uint8 array.  Ranges are checked as in
        insert_many (aligned, non-empty, not past 2**64); one C loop without the GIL.

        >>> m = ExtentMap(); m.insert(0, 0x100); m.insert(0x100, 0x100)
        >>> m.classify_many([0x40, 0x80, 0x200, 0x1c0], [0x40, 0x100, 0x40, 0x80]).tolist()
        [1, 2, 0, 3]
        """
        cdef index_t n, bad = 0, k
        cdef int status
        cdef const addr_t[::1] vs, vl
        cdef addr_t[::1] vlast
        cdef uint8_t[::1] out
        cdef Finger f
        cdef Leaf* leaf
        cdef addr_t reach
        cdef bint more
        cdef uint8_t kind
        s_arr = as_u64_array(starts, "starts")
        l_arr = as_u64_array(lengths, "lengths")
        n = s_arr.shape[0]
        if l_arr.shape[0] != n:
            raise ArrayShapeError(f"lengths has {l_arr.shape[0]} elements, starts has {n}")
        result = np.zeros(n, dtype=np.uint8)
        if n == 0:
            return result
        last_arr = np.empty(n, dtype=np.uint64)
        vs = s_arr
        vl = l_arr
        vlast = last_arr
        out = result
        self.begin_read()
        try:
            with nogil:
                status = check_batch(&vs[0], &vl[0], NULL, &vlast[0], n, self.granule - 1, &bad)
                if status == OK:
                    for k in range(n):
                        # Walk the extents from the first one that ends at or after the start,
                        # while they continue without a hole; stop at the range's last byte.
                        more = seek(&self.v, vs[k], &f)
                        if not more or self.v.leaves[f.li].start[f.j] > vlast[k]:
                            continue                                 # K_FREE
                        leaf = self.v.leaves[f.li]
                        if leaf.start[f.j] > vs[k]:
                            out[k] = K_PARTIAL
                            continue
                        if leaf.last[f.j] >= vlast[k]:
                            out[k] = K_WITHIN
                            continue
                        kind = K_COVERED
                        reach = leaf.last[f.j]
                        while True:
                            more = advance(&self.v, &f)
                            if not more or self.v.leaves[f.li].start[f.j] != reach + 1:
                                kind = K_PARTIAL
                                break
                            reach = self.v.leaves[f.li].last[f.j]
                            if reach >= vlast[k]:
                                break
                        out[k] = kind
        finally:
            self.readers -= 1
        if status != OK:
            raise_batch_error(status, bad, 0, s_arr, l_arr, None, self.granule)
        return result

    def to_arrays(self):
        """All extents as ExtentArrays (starts, lengths, targets uint64; labels uint32), in
        address order.  The arrays are new and own their memory."""
        self.begin_read()
        try:
            out = ExtentArrays(np.empty(self.count, np.uint64), np.empty(self.count, np.uint64),
                               np.empty(self.count, np.uint64), np.empty(self.count, np.uint32))
            self.fill_arrays(out)
        finally:
            self.readers -= 1
        return out

    cdef fill_arrays(self, out):
        cdef addr_t[::1] os = out.starts, ol = out.lengths, ot = out.targets
        cdef label_t[::1] ob = out.labels
        cdef index_t li, j, n, k = 0
        cdef Leaf* leaf
        with nogil:
            for li in range(self.v.nleaves):
                leaf = self.v.leaves[li]
                n = leaf.n
                memcpy(&os[k], leaf.start, n * sizeof(addr_t))
                memcpy(&ot[k], leaf.target, n * sizeof(addr_t))
                memcpy(&ob[k], leaf.label, n * sizeof(label_t))
                for j in range(n):
                    ol[k + j] = leaf.last[j] - leaf.start[j] + 1
                k += n

    @classmethod
    def from_arrays(cls, starts, lengths, targets=None, labels=None, *, granule=64,
                    leaf_capacity=DEFAULT_LEAF_CAPACITY):
        """A new map of the given extents, in any order (validated: aligned, disjoint, ...).

        Sorting is a radix argsort in C without the GIL, skipped for sorted input.

        >>> m = ExtentMap.from_arrays([4096, 0], [64, 128], labels=[2, 1])
        >>> [tuple(e) for e in m]
        [(0, 128, 0, 1), (4096, 64, 4096, 2)]
        """
        cdef ExtentMap m = ExtentMap(granule, leaf_capacity=leaf_capacity)
        m.add_batch(starts, lengths, targets, labels)
        return m

    def insert_many(self, starts, lengths, targets=None, labels=None):
        """Insert a batch of extents, all or nothing: if any is bad or overlaps another or the
        map, an error names it and the map is unchanged.  Large batches merge and rebuild in
        O(n + m); small ones insert one by one."""
        self.add_batch(starts, lengths, targets, labels)

    cdef add_batch(self, starts, lengths, targets, labels):
        cdef index_t n, bad = 0, other = 0, k
        cdef int status = OK
        cdef KeyIndex* order = NULL
        cdef addr_t gmask = self.granule - 1
        cdef const addr_t[::1] vs, vl, vt
        cdef addr_t[::1] vlast
        cdef const label_t[::1] vb
        cdef const addr_t* tp = NULL
        cdef const label_t* bp = NULL
        s_arr = as_u64_array(starts, "starts")
        l_arr = as_u64_array(lengths, "lengths")
        n = s_arr.shape[0]
        if l_arr.shape[0] != n:
            raise ArrayShapeError(f"lengths has {l_arr.shape[0]} elements, starts has {n}")
        t_arr = None
        if targets is not None:
            t_arr = as_u64_array(targets, "targets")
            if t_arr.shape[0] != n:
                raise ArrayShapeError(f"targets has {t_arr.shape[0]} elements, starts has {n}")
        b_arr = as_labels(labels, n)
        if n == 0:
            self.check_mutable()
            return
        last_arr = np.empty(n, dtype=np.uint64)
        vs = s_arr
        vl = l_arr
        vlast = last_arr
        if t_arr is not None:
            vt = t_arr
            tp = &vt[0]
        if b_arr is not None:
            vb = b_arr
            bp = &vb[0]
        cdef Batch b
        b.starts = &vs[0]
        b.lasts = &vlast[0]
        b.targets = tp
        b.labels = bp
        b.owned = False
        self.begin_write()
        try:
            with nogil:
                status = check_batch(&vs[0], &vl[0], tp, &vlast[0], n, gmask, &bad)
                if status == OK and not is_sorted(&vs[0], n):
                    order = sort_by_key(&vs[0], n, 0)
                    if order == NULL or sort_batch(&b, order, n) < 0:
                        status = NO_MEMORY
                if status == OK:
                    status = check_sorted_disjoint(&b, n, &bad, &other)
                if status == OK:
                    # All after the map's end: new leaves at the end, O(m).  Few into many: one
                    # by one.  Otherwise one merge pass, O(n + m).
                    if self.count and b.starts[0] > self.last_byte():
                        status = self.append_sorted(&b, n)
                    elif n * 16 < self.count:
                        status = self.insert_each(&b, n, &bad)
                    else:
                        status = self.merge_rebuild(&b, n, &bad)
                if order != NULL and status in (OVERLAP_BATCH, OVERLAP_MAP):
                    bad = order[bad].index          # name the caller's extents, not sorted places
                    other = order[other].index
        finally:
            free(order)
            batch_free(&b)
            self.writing = False
        if status != OK:
            raise_batch_error(status, bad, other, s_arr, l_arr, t_arr, self.granule)
        self.changed()

    cdef int insert_each(self, const Batch* b, index_t n, index_t* bad) noexcept nogil:
        """Insert a few sorted, disjoint extents one by one, after checking none overlaps the map."""
        cdef index_t i
        for i in range(n):
            if self.overlaps(b.starts[i], b.lasts[i]):
                bad[0] = i
                return OVERLAP_MAP
        for i in range(n):
            if self.insert_c(b.starts[i], b.lasts[i], batch_target(b, i), batch_label(b, i)) != 0:
                return NO_MEMORY                  # (overlaps were ruled out above)
        return OK

    cdef addr_t last_byte(self) noexcept nogil:
        """The last mapped byte (the map must not be empty)."""
        cdef Leaf* leaf = self.v.leaves[self.v.nleaves - 1]
        return leaf.last[leaf.n - 1]

    cdef int append_sorted(self, const Batch* batch, index_t n) noexcept nogil:
        """Add n sorted, disjoint extents that all lie after the map's last byte, as new leaves."""
        cdef Builder b
        cdef index_t i, first = self.v.nleaves, added
        if builder_init(&b, n, self.cap) < 0:
            return NO_MEMORY
        for i in range(n):
            if builder_push(&b, batch.starts[i], batch.lasts[i], batch_target(batch, i),
                            batch_label(batch, i)) < 0:
                builder_discard(&b)
                return NO_MEMORY
        added = b.li + 1
        if self.grow_top(first + added) < 0:
            builder_discard(&b)
            return NO_MEMORY
        memcpy(&self.v.leaves[first], b.leaves, added * sizeof(Leaf*))
        memcpy(&self.v.fence[first], b.fence, added * sizeof(addr_t))
        free(b.leaves)
        free(b.fence)
        self.v.nleaves += added
        self.count += b.written
        self.mapped += b.mapped
        # A small new leaf, or an old last leaf that was small as the only leaf, merges with
        # or borrows from its neighbour.
        self.rebalance(first)
        if first > 0:
            self.rebalance(first - 1)
        return OK

    cdef int merge_rebuild(self, const Batch* batch, index_t n, index_t* bad) noexcept nogil:
        """Merge the map's extents with n disjoint new ones (in start order) into new leaves,
        in one pass; an overlap with the map discards the new leaves and leaves the map as it was."""
        cdef Builder b
        cdef index_t li = 0, j = 0, k = 0, i = -1, last_new = -1
        cdef int r
        cdef Leaf* leaf
        if builder_init(&b, self.count + n, self.cap) < 0:
            return NO_MEMORY
        while k < n or li < self.v.nleaves:
            i = k
            if li < self.v.nleaves and (k == n or self.v.leaves[li].start[j] < batch.starts[k]):
                leaf = self.v.leaves[li]
                r = builder_push(&b, leaf.start[j], leaf.last[j], leaf.target[j], leaf.label[j])
                j += 1
                if j == leaf.n:
                    li += 1
                    j = 0
                if r > 0:
                    i = last_new      # old extents are disjoint: the new one before it overlaps
            else:
                r = builder_push(&b, batch.starts[k], batch.lasts[k], batch_target(batch, k),
                                 batch_label(batch, k))
                last_new = i
                k += 1
            if r != 0:
                builder_discard(&b)
                bad[0] = i
                return NO_MEMORY if r < 0 else OVERLAP_MAP
        self.install(&b)
        return OK

    def remove_many(self, starts, lengths):
        """Unmap every range ``[starts[i], starts[i] + lengths[i])``; return the bytes unmapped.

        All ranges are checked before any is applied (a bad one raises, naming it, and the
        map is unchanged); ranges may overlap each other and unmapped space.
        """
        cdef index_t n, bad = 0, k
        cdef int status
        cdef const addr_t[::1] vs, vl
        cdef addr_t[::1] vlast
        cdef addr_t gone, total = 0, carry = 0     # the total can reach 2**64
        cdef KeyIndex* order = NULL
        cdef index_t i
        cdef bint failed = False
        s_arr = as_u64_array(starts, "starts")
        l_arr = as_u64_array(lengths, "lengths")
        n = s_arr.shape[0]
        if l_arr.shape[0] != n:
            raise ArrayShapeError(f"lengths has {l_arr.shape[0]} elements, starts has {n}")
        if n == 0:
            self.check_mutable()
            return 0
        last_arr = np.empty(n, dtype=np.uint64)
        vs = s_arr
        vl = l_arr
        vlast = last_arr
        self.begin_write()
        try:
            with nogil:
                status = check_batch(&vs[0], &vl[0], NULL, &vlast[0], n, self.granule - 1, &bad)
                if status == OK and n >= SORT_MIN:
                    # In address order the searches stay in cache.
                    order = locality_order(&vs[0], n, &failed)
                    if failed:
                        status = NO_MEMORY
                if status == OK:
                    for k in range(n):
                        i = order[k].index if order != NULL else k
                        if self.remove_c(vs[i], vlast[i], &gone) < 0:
                            status = NO_MEMORY
                            break
                        total += gone
                        if total < gone:
                            carry += 1
        finally:
            free(order)
            self.writing = False
        if status != OK:
            raise_batch_error(status, bad, 0, s_arr, l_arr, None, self.granule)
        self.changed()
        return (<object>carry << 64) + total

    # ------------------------------------------------------------------ state

    def to_bytes(self):
        """The map as bytes: a header (magic, version, granule, count), the four arrays
        little-endian, and a CRC-32 of all that.  ``ExtentMap.from_bytes`` reads it back."""
        a = self.to_arrays()
        body = b"".join([
            _HEADER.pack(_MAGIC, _VERSION, 0, self.granule, self.count),
            a.starts.astype("<u8").tobytes(), a.lengths.astype("<u8").tobytes(),
            a.targets.astype("<u8").tobytes(), a.labels.astype("<u4").tobytes(),
        ])
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data, *, leaf_capacity=DEFAULT_LEAF_CAPACITY):
        """Read a map written by :meth:`to_bytes`; CorruptDataError if the bytes are truncated,
        of another version, fail the checksum or describe an invalid map."""
        try:
            data = memoryview(data).cast("B")
        except TypeError:
            raise InputTypeError(f"from_bytes needs a bytes-like object, not {type(data).__name__}") from None
        if len(data) < _HEADER.size + _CRC.size:
            raise CorruptDataError(f"truncated: {len(data)} bytes is shorter than the "
                                   f"{_HEADER.size + _CRC.size}-byte header and checksum")
        magic, version, reserved, granule, count = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise CorruptDataError(f"bad magic {bytes(magic)!r}: not an ExtentMap")
        if version != _VERSION:
            raise CorruptDataError(f"format version {version} is not supported (this is {_VERSION})")
        expected = _HEADER.size + count * 28 + _CRC.size
        if len(data) != expected:
            raise CorruptDataError(f"{'truncated' if len(data) < expected else 'trailing bytes'}: "
                                   f"{len(data)} bytes where {count} extents need {expected}")
        body = data[:-_CRC.size]
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(body) != crc:
            raise CorruptDataError("checksum mismatch: the data is corrupt")
        off = _HEADER.size
        arrays = []
        for dtype, size in (("<u8", 8), ("<u8", 8), ("<u8", 8), ("<u4", 4)):
            arrays.append(np.frombuffer(body, dtype=dtype, count=count, offset=off))
            off += count * size
        try:
            return cls.from_arrays(*arrays, granule=granule, leaf_capacity=leaf_capacity)
        except (InvalidRangeError, OverlapError) as e:
            raise CorruptDataError(f"the data describes an invalid map: {e}") from None

    # ------------------------------------------------------------------ checking

    def check_invariants(self):
        """Check every structural invariant (sortedness, no overlap, alignment, leaf fill,
        fences, cached count / bytes / prefix sums); raise AssertionError naming the first
        broken one.  O(n).  Tests run it after every step."""
        cdef index_t li, j, total = 0, minfill = self.cap // 4
        cdef addr_t mapped = 0, prev_last = 0, gmask = self.granule - 1
        cdef bint first = True
        cdef Leaf* leaf
        self.check_not_writing()
        assert 0 <= self.v.nleaves <= self.leaves_alloc, "leaf count exceeds allocation"
        for li in range(self.v.nleaves):
            leaf = self.v.leaves[li]
            assert 1 <= leaf.n <= self.cap, f"leaf {li} holds {leaf.n} (capacity {self.cap})"
            assert self.v.nleaves == 1 or leaf.n >= minfill, \
                f"leaf {li} holds {leaf.n} < {minfill} (a quarter of {self.cap})"
            assert self.v.fence[li] == leaf.start[0], f"fence {li} is stale"
            if self.prefix_ok:
                assert self.prefix[li] == total, f"prefix {li} is stale"
            for j in range(leaf.n):
                assert leaf.start[j] <= leaf.last[j], f"extent ({li}, {j}) wraps"
                assert leaf.start[j] & gmask == 0, f"extent ({li}, {j}) start misaligned"
                assert (leaf.last[j] + 1) & gmask == 0, f"extent ({li}, {j}) end misaligned"
                assert leaf.last[j] - leaf.start[j] <= ADDR_MAX - leaf.target[j], \
                    f"extent ({li}, {j}) target wraps"
                assert first or leaf.start[j] > prev_last, f"extent ({li}, {j}) overlaps or is out of order"
                first = False
                prev_last = leaf.last[j]
                mapped += leaf.last[j] - leaf.start[j] + 1
            total += leaf.n
        assert total == self.count, f"count {self.count} != {total} extents held"
        assert mapped == self.mapped, "cached mapped bytes are stale"


def restore(data, leaf_capacity):
    """Unpickle an ExtentMap (keeping its leaf capacity)."""
    return ExtentMap.from_bytes(data, leaf_capacity=leaf_capacity)


_MAGIC = b"DCDMAPEM"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")   # magic, version, reserved, granule, count
_CRC = struct.Struct("<I")
