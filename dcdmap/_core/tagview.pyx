"""Tag views: one host's contiguous view of a tagged allocation, and the cross-host check.

A host receives the extents of a tag as a list, in arrival order, each with a shared-extent
sequence number (CXL r4.0 Table 8-230; Linux DCD v11 ``cxl_add_pending``). It builds one
contiguous view of the allocation:

* **shareable** capacity (sequence numbers given): extents sorted by sequence number, which
  must be exactly 0..n-1; extent k sits at logical offset Σ lengths of extents 0..k-1. Every
  host applies the same order, so byte v is the same memory on every host, whatever the
  arrival order or the host addresses.
* **non-shareable** capacity (no sequence numbers): arrival order.
* **interleaved** (famfs-style, ``chunk_size=``): the extents are strips of equal length;
  logical offset o lives in chunk c = o / chunk_size, strip c % nstrips, stripe
  c / nstrips, at strips[strip] + stripe * chunk_size + o % chunk_size (famfs
  ``famfs_interleave_fileofs_to_daxofs``).

A view keeps two ExtentMaps: logical offset -> host address (forward), host address ->
logical offset (reverse; its construction also proves the extents disjoint). Translation in
both directions is the engine's: O(log n) scalar, one C loop without the GIL for batches.
Building a view of n extents is O(n) for the sequence check plus the radix sort of the
host addresses.

``verify_views`` checks that every logical byte reaches the same media address on every host.
It composes each host's view with that host's map to the media (compose: cut where extents
end), then walks the breakpoints of all hosts at once: between two breakpoints every host's
media address grows with the offset, so the hosts agree on the whole stretch iff they agree
at its start. O(total extents · log) for the compositions, O(breakpoints · hosts) for the walk.
"""
from collections import namedtuple

import numpy as np

cimport cython
from libc.stdlib cimport malloc, free

from dcdmap._core._types cimport addr_t, label_t, index_t
from dcdmap._core.extentmap cimport ExtentMap, MapView, Leaf, view_translate, to_u64, query_batch, Q_TRANSLATE
from dcdmap._core.extentmap import as_u64_array
from dcdmap._core.compose import compose

from dcdmap.errors import (
    AlignmentError, ArrayShapeError, DcdmapError, InputTypeError, InterleaveError, InvalidRangeError,
    SequenceError, UnmappedError,
)

__all__ = ["TagView", "ViewSegments", "ViewCheck", "verify_views"]

cdef addr_t ADDR_MAX = 0xFFFFFFFFFFFFFFFF

ViewSegments = namedtuple("ViewSegments", "logical_starts host_starts lengths")
ViewSegments.__doc__ = "A view as three uint64 arrays, in logical order."


cdef int place_by_sequence(const addr_t* seqs, index_t n, index_t* pos, index_t* bad,
                           index_t* other) noexcept nogil:
    """pos[s] = the extent with sequence number s.  0 if the numbers are exactly 0..n-1; else
    1 (seqs[*bad] >= n: a gap) or 2 (seqs[*bad] == seqs[*other]: a duplicate)."""
    cdef index_t i
    for i in range(n):
        pos[i] = -1
    for i in range(n):
        if seqs[i] >= <addr_t>n:
            bad[0] = i
            return 1
        if pos[seqs[i]] >= 0:
            bad[0] = i
            other[0] = pos[seqs[i]]
            return 2
        pos[seqs[i]] = i
    return 0


cdef str missing_numbers(const addr_t* seqs, index_t n):
    """Which of 0..n-1 are missing, for the error message (at most five named)."""
    seen = np.zeros(n, dtype=bool)
    arr = np.asarray(<addr_t[:n]>seqs) if n else np.empty(0, np.uint64)
    seen[arr[arr < n].astype(np.int64)] = True
    gone = np.flatnonzero(~seen)
    names = ", ".join(str(int(x)) for x in gone[:5])
    return names + (", ..." if len(gone) > 5 else "")


@cython.final
cdef class TagView:
    """One host's contiguous view of a tagged allocation.

    ``starts``, ``lengths`` (and ``seqs`` for shareable capacity) describe the host's extents
    in arrival order: numpy arrays or lists.  With ``seqs`` the extents are placed in sequence
    order (which must be exactly 0..n-1); without, in arrival order.  ``chunk_size`` (with
    optional ``nstrips``, which must equal the number of extents) interleaves them famfs-style.

    >>> v = TagView([0x9000, 0x1000, 0x5000], [0x1000, 0x2000, 0x1000], seqs=[2, 0, 1])
    >>> v.size, hex(v.translate(0x2040)), v.reverse(0x9000)
    (16384, '0x5040', 12288)
    >>> v.segments().host_starts.tolist()
    [4096, 20480, 36864]

    Errors: SequenceError (a gap, a duplicate, numbers not starting at 0), AlignmentError and
    InvalidRangeError (as for ExtentMap), OverlapError (two extents overlap in host address
    space), InterleaveError (inconsistent interleave parameters).

    A view is immutable; it may be shared between threads freely.
    """

    def __init__(self, starts, lengths, seqs=None, *, granule=64, chunk_size=None, nstrips=None):
        cdef index_t n, bad = 0, other = 0, k
        cdef int status
        ExtentMap(granule)                       # refuses a granule that is not a power of two
        s_arr = as_u64_array(starts, "starts")
        l_arr = as_u64_array(lengths, "lengths")
        n = s_arr.shape[0]
        if l_arr.shape[0] != n:
            raise ArrayShapeError(f"lengths has {l_arr.shape[0]} elements, starts has {n}")
        if n == 0:
            raise InvalidRangeError("a view needs at least one extent")
        # Placement order: by sequence number, or arrival.
        self.shareable = seqs is not None
        if self.shareable:
            q_arr = as_u64_array(seqs, "seqs")
            if q_arr.shape[0] != n:
                raise ArrayShapeError(f"seqs has {q_arr.shape[0]} elements, starts has {n}")
            order = np.empty(n, dtype=np.intp)
            status = self.place(q_arr, order, &bad, &other)
            if status == 1:
                raise SequenceError(f"sequence numbers must be exactly 0..{n - 1}: extent {bad} has "
                                    f"{int(q_arr[bad])}, and {missing_numbers_of(q_arr)} is missing")
            if status == 2:
                raise SequenceError(f"sequence number {int(q_arr[bad])} is given twice: extents "
                                    f"{other} and {bad}")
            # Into placement order by scattering through the sequence numbers (sequential
            # reads; a gather through `order` would stall on every scattered read).
            host = np.empty(n, np.uint64)
            host[q_arr] = s_arr
            lens = np.empty(n, np.uint64)
            lens[q_arr] = l_arr
        else:
            order = np.arange(n, dtype=np.intp)
            host = s_arr
            lens = l_arr
        self.count = n
        self.chunk = 0
        if chunk_size is not None or nstrips is not None:
            self.init_interleave(s_arr, l_arr, host, lens, order, chunk_size, nstrips, granule)
            return
        logical = np.empty(n, np.uint64)
        logical[0] = 0
        np.cumsum(lens[:n - 1], out=logical[1:])
        # Reverse first: building it proves the extents aligned and disjoint in host space.
        self.rev = build_reverse(host, lens, logical, s_arr, l_arr, granule)
        self.fwd = ExtentMap.from_arrays(logical, lens, host, np.arange(n, dtype=np.uint32)
                                         if n < 1 << 32 else None, granule=granule)

    cdef int place(self, q_arr, index_t[::1] order, index_t* bad, index_t* other) except -1:
        cdef const addr_t[::1] q = q_arr
        cdef index_t n = q.shape[0]
        cdef int status
        with nogil:
            status = place_by_sequence(&q[0], n, &order[0], bad, other)
        return status

    cdef init_interleave(self, s_arr, l_arr, host, lens, order, chunk_size, nstrips, granule):
        cdef addr_t cs, strip_len
        cdef index_t n = self.count
        if chunk_size is None:
            raise InterleaveError("nstrips needs chunk_size")
        cs = to_u64(chunk_size, "chunk_size")
        if nstrips is not None and to_u64(nstrips, "nstrips") != <addr_t>n:
            raise InterleaveError(f"nstrips {nstrips} does not match the {n} extents given as strips")
        if cs == 0 or cs % to_u64(granule, "granule"):
            raise InterleaveError(f"chunk_size {cs:#x} must be a non-zero multiple of the granule {granule:#x}")
        strip_len = int(lens[0])
        if np.any(lens != strip_len):
            i = int(np.argmax(lens != strip_len))
            raise InterleaveError(f"strips must have equal lengths: extent {int(order[i])} is "
                                  f"{int(lens[i]):#x}, extent {int(order[0])} is {strip_len:#x}")
        if strip_len % cs:
            raise InterleaveError(f"the strip length {strip_len:#x} is not a multiple of chunk_size {cs:#x}")
        if (<object>strip_len) * n > 1 << 64:
            raise InvalidRangeError("the interleaved view would be larger than 2**64 bytes")
        # Reverse: host address -> (strip index * strip length + offset in the strip).
        self.rev = build_reverse(host, lens, np.arange(n, dtype=np.uint64) * np.uint64(strip_len),
                                 s_arr, l_arr, granule)
        self.fwd = None
        self.chunk = cs
        self.strip_len = strip_len
        self.strips = np.ascontiguousarray(host, dtype=np.uint64)
        cdef const addr_t[::1] sv = self.strips
        self.strip_starts = &sv[0]

    # ------------------------------------------------------------------ properties

    @property
    def size(self):
        """Bytes in the view (an int, up to 2**64)."""
        if self.chunk:
            return (<object>self.strip_len) * self.count
        return self.fwd.mapped_bytes

    @property
    def interleaved(self):
        """Whether the view interleaves its extents (famfs-style)."""
        return self.chunk != 0

    @property
    def chunk_size(self):
        """The interleave chunk size, or None."""
        return self.chunk if self.chunk else None

    def __len__(self):
        return self.count

    def __repr__(self):
        kind = "shareable" if self.shareable else "arrival-order"
        if self.chunk:
            kind += f", interleaved by {self.chunk:#x}"
        return f"TagView({self.count} extents, {self.size:#x} bytes, {kind})"

    # ------------------------------------------------------------------ C level

    cdef bint translate_c(self, addr_t offset, addr_t* out) noexcept nogil:
        cdef addr_t c, stripe, strip
        if self.chunk == 0:
            return view_translate(&self.fwd.v, offset, out)
        if offset / self.strip_len >= <addr_t>self.count:
            return False
        c = offset / self.chunk
        strip = c % <addr_t>self.count
        stripe = c / <addr_t>self.count
        out[0] = self.strip_starts[strip] + stripe * self.chunk + offset % self.chunk
        return True

    cdef bint reverse_c(self, addr_t addr, addr_t* out) noexcept nogil:
        cdef addr_t x, strip, d
        if not view_translate(&self.rev.v, addr, &x):
            return False
        if self.chunk != 0:
            strip = x / self.strip_len
            d = x % self.strip_len
            x = ((d / self.chunk) * <addr_t>self.count + strip) * self.chunk + d % self.chunk
        out[0] = x
        return True

    # ------------------------------------------------------------------ Python API

    def translate(self, offset):
        """The host address of logical ``offset``; UnmappedError past the view's end."""
        cdef addr_t o = to_u64(offset, "offset"), out
        if self.translate_c(o, &out):
            return out
        raise UnmappedError(f"offset {o:#x} is outside the view ({self.size:#x} bytes)")

    def reverse(self, addr):
        """The logical offset of host address ``addr``, or None if the view does not hold it."""
        cdef addr_t a = to_u64(addr, "address"), out
        if self.reverse_c(a, &out):
            return out
        return None

    def translate_many(self, offsets, missing=None):
        """Host addresses of a batch of logical offsets (one C loop without the GIL).
        Offsets past the end raise UnmappedError naming the first, or become ``missing``."""
        return self.batch(offsets, missing, True)

    def reverse_many(self, addrs, missing=None):
        """Logical offsets of a batch of host addresses (one C loop without the GIL).
        Addresses the view does not hold raise UnmappedError naming the first, or become
        ``missing``."""
        return self.batch(addrs, missing, False)

    cdef batch(self, values, missing, bint forward):
        cdef const addr_t[::1] q
        cdef addr_t[::1] out
        cdef addr_t fill_value = 0
        cdef bint fill = missing is not None
        cdef index_t n, i, bad = -1
        arr = as_u64_array(values, "offsets" if forward else "addrs")
        if fill:
            fill_value = to_u64(missing, "missing")
        n = arr.shape[0]
        result = np.empty(n, np.uint64)
        if n == 0:
            return result
        q = arr
        out = result
        cdef ExtentMap m = self.fwd if forward else self.rev
        if self.chunk == 0:        # the engine's batch loop (sorted for locality when large)
            with nogil:
                bad = query_batch(m, &q[0], n, Q_TRANSLATE, &out[0], NULL, NULL, fill, fill_value)
            if bad == -2:
                raise MemoryError()
        else:
            with nogil:
                for i in range(n):
                    if not (self.translate_c(q[i], &out[i]) if forward else self.reverse_c(q[i], &out[i])):
                        if fill:
                            out[i] = fill_value
                        elif bad < 0:
                            bad = i
        if bad >= 0:
            if forward:
                raise UnmappedError(f"offsets[{bad}] = {int(arr[bad]):#x} is outside the view "
                                    f"({self.size:#x} bytes)")
            raise UnmappedError(f"addrs[{bad}] = {int(arr[bad]):#x} is not held by the view")
        return result

    def segments(self):
        """The view as ViewSegments(logical_starts, host_starts, lengths) in logical order.
        An interleaved view comes out chunk by chunk."""
        cdef addr_t nchunks
        if self.chunk == 0:
            a = self.fwd.to_arrays()
            return ViewSegments(a.starts, a.targets, a.lengths)
        nchunks = (self.strip_len // self.chunk) * self.count
        c = np.arange(nchunks, dtype=np.uint64)
        ns = np.uint64(self.count)
        host = self.strips[(c % ns).astype(np.intp)] + (c // ns) * np.uint64(self.chunk)
        return ViewSegments(c * np.uint64(self.chunk), host, np.full(nchunks, self.chunk, np.uint64))

    def to_map(self):
        """The view as a new ExtentMap: logical offset -> host address (label = the extent's
        place in the view, 0 for interleaved chunks)."""
        if self.chunk == 0:
            return self.fwd.copy()
        s = self.segments()
        return ExtentMap.from_arrays(s.logical_starts, s.lengths, s.host_starts,
                                     granule=self.rev.granule)


cdef ExtentMap build_reverse(host, lens, targets, s_arr, l_arr, granule):
    """The host address -> view map, from arrays in placement order.  Its construction checks
    the extents (aligned, disjoint); if that fails, the caller's arrays are checked again so
    that the error names the caller's extent numbers, not places in the view."""
    try:
        return ExtentMap.from_arrays(host, lens, targets, None, granule=granule)
    except DcdmapError as e:
        first = e
    ExtentMap.from_arrays(s_arr, l_arr, None, None, granule=granule)    # raises, naming them
    raise first


def missing_numbers_of(q_arr):
    cdef const addr_t[::1] q = q_arr
    return missing_numbers(&q[0], q.shape[0])


ViewCheck = namedtuple("ViewCheck", "consistent offset media reason")
ViewCheck.__doc__ = """The result of :func:`verify_views`.

``consistent``: every logical byte reaches the same media address on every host.  Otherwise
``offset`` is the first logical offset where the hosts differ, ``media`` each host's media
address there (None where that host reaches none), and ``reason`` says what differs.
``bool(check)`` is ``consistent``.
"""
ViewCheck.__bool__ = lambda self: self.consistent


def verify_views(views, media_maps=None, names=None):
    """Check that every logical byte of the views reaches the same media address on every host.

    ``views``: one TagView (or an ExtentMap logical -> host address) per host.
    ``media_maps``: one ExtentMap per host, host address -> media address (a head's DPA ->
    device media, or HPA -> media); None when host addresses already name the media.
    ``names``: how to call the hosts in the reason (default: host 0, host 1, ...).

    >>> a = TagView([0x1000, 0x8000], [0x1000, 0x1000], seqs=[0, 1])
    >>> b = TagView([0x8000, 0x1000], [0x1000, 0x1000], seqs=[1, 0])   # other arrival order
    >>> bool(verify_views([a, b]))
    True
    >>> c = TagView([0x8000, 0x1000], [0x1000, 0x1000], seqs=[0, 1])   # a swapped pair
    >>> verify_views([a, c]).offset
    0
    """
    cdef index_t k, nh
    try:
        views = list(views)
    except TypeError:
        raise InputTypeError(f"views must be a sequence of TagViews, not {type(views).__name__}") from None
    nh = len(views)
    if nh == 0:
        raise InvalidRangeError("verify_views needs at least one view")
    if media_maps is not None:
        try:
            media_maps = list(media_maps)
        except TypeError:
            raise InputTypeError(f"media_maps must be a sequence of ExtentMaps, not "
                                 f"{type(media_maps).__name__}") from None
        if len(media_maps) != nh:
            raise ArrayShapeError(f"{len(media_maps)} media maps for {nh} views")
    if names is None:
        names = [f"host {k}" for k in range(nh)]
    maps = []
    end = 0                      # the largest view's size: the check runs over [0, end)
    for k in range(nh):
        v = views[k]
        if isinstance(v, TagView):
            end = max(end, v.size)
        elif isinstance(v, ExtentMap) and len(v):
            end = max(end, v[len(v) - 1].end)
        if isinstance(v, TagView):
            fwd = (<TagView>v).fwd if (<TagView>v).chunk == 0 else v.to_map()
        elif isinstance(v, ExtentMap):
            fwd = v
        else:
            raise InputTypeError(f"views[{k}] is a {type(v).__name__}, not a TagView or ExtentMap")
        if media_maps is not None:
            if not isinstance(media_maps[k], ExtentMap):
                raise InputTypeError(f"media_maps[{k}] is a {type(media_maps[k]).__name__}, not an ExtentMap")
            fwd = compose(fwd, media_maps[k])
        maps.append(fwd.to_arrays())
    if end == 0:
        return ViewCheck(True, None, tuple(None for _ in range(nh)), "the views are empty")
    return walk_breakpoints(maps, names, end - 1)


cdef walk_breakpoints(list maps, list names, addr_t end_last):
    """Compare every host with host 0, breakpoint by breakpoint; report the first offset."""
    cdef index_t nh = len(maps), h
    cdef addr_t v, best = 0
    cdef bint found = False
    cdef int status
    cdef Segs a, b
    arrays = [segs_of(maps[h]) for h in range(nh)]
    view_segs(arrays[0], &a)
    for h in range(nh):
        if h == 0 and nh > 1:
            continue
        view_segs(arrays[h], &b)
        with nogil:
            status = walk_pair(&a, &b, best - 1 if found else end_last, &v)
        if status and (not found or v < best):
            best = v
            found = True
    if not found:
        return ViewCheck(True, None, tuple(None for _ in range(nh)),
                         f"all {nh} hosts agree on {<object>end_last + 1:#x} bytes")
    media = [media_at(arrays[h], best) for h in range(nh)]
    unmapped = [names[h] for h in range(nh) if media[h] is None]
    if unmapped:
        reason = (f"{', '.join(unmapped)} reach{'es' if len(unmapped) == 1 else ''} no media "
                  f"at offset {best:#x}")
    else:
        reason = (f"offset {best:#x} reaches media " +
                  ", ".join(f"{media[h]:#x} on {names[h]}" for h in range(nh)))
    return ViewCheck(False, best, tuple(media), reason)


cdef struct Segs:             # one host's logical -> media segments, in logical order
    const addr_t* starts
    const addr_t* lasts
    const addr_t* targets
    index_t n


cdef tuple segs_of(a):
    """(starts, lasts, targets) arrays of an ExtentArrays."""
    return a.starts, a.starts + (a.lengths - np.uint64(1)), a.targets


cdef void view_segs(tuple arrays, Segs* out):
    cdef const addr_t[::1] mv
    out.n = len(arrays[0])
    if out.n == 0:
        out.starts = out.lasts = out.targets = NULL
        return
    mv = arrays[0]
    out.starts = &mv[0]
    mv = arrays[1]
    out.lasts = &mv[0]
    mv = arrays[2]
    out.targets = &mv[0]


cdef object media_at(tuple arrays, addr_t v):
    i = int(np.searchsorted(arrays[0], np.uint64(v), "right")) - 1
    if i < 0 or arrays[1][i] < v:
        return None
    return int(arrays[2][i]) + (v - int(arrays[0][i]))


cdef int walk_pair(const Segs* a, const Segs* b, addr_t end_last, addr_t* at) noexcept nogil:
    """0 if a and b map every offset of [0, end_last] to the same media; else 1 and the first
    offset where one of them maps nothing or they differ.  Between breakpoints both grow with
    the offset, so one comparison per stretch decides it: O(a.n + b.n)."""
    cdef index_t i = 0, k = 0
    cdef addr_t v = 0, next_last
    while True:
        while i < a.n and a.lasts[i] < v:
            i += 1
        while k < b.n and b.lasts[k] < v:
            k += 1
        if i == a.n or a.starts[i] > v or k == b.n or b.starts[k] > v \
                or a.targets[i] + (v - a.starts[i]) != b.targets[k] + (v - b.starts[k]):
            at[0] = v
            return 1
        next_last = a.lasts[i] if a.lasts[i] < b.lasts[k] else b.lasts[k]
        if next_last >= end_last:
            return 0
        v = next_last + 1
