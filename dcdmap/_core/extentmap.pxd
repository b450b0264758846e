# ExtentMap: the engine's ordered map of non-overlapping [start, start+length) ranges of
# uint64 addresses, each carrying a target address and a label.  The bodies and the
# header essay (layout, invariants, complexity) are in extentmap.pyx.
from dcdmap._core._types cimport addr_t, label_t, index_t
from dcdmap._core._sort cimport KeyIndex
from dcdmap._core._search cimport last_le
from libc.stdint cimport int64_t, uint8_t

cdef struct Leaf:
    index_t n             # extents held, 1 <= n <= capacity
    addr_t* start         # first byte of each extent, strictly increasing
    addr_t* last          # last byte (start + length - 1): 2**64 - 1 still fits
    addr_t* target        # what `start` translates to
    label_t* label        # the caller's label


cdef struct Batch:       # a batch of checked extents in start order (insert_many, from_arrays)
    const addr_t* starts
    const addr_t* lasts
    const addr_t* targets    # NULL: each extent translates to its own start
    const label_t* labels    # NULL: label 0
    bint owned               # the arrays are malloc'd copies (sorted), freed with the batch


cdef struct Builder:     # fills new leaves in one pass (from_arrays, large insert_many)
    Leaf** leaves        # new top arrays, sized for the final leaf count
    addr_t* fence
    index_t alloc
    index_t nl           # leaves to fill: ceil(total / cap), filled evenly
    index_t total        # extents that will be pushed
    index_t cap
    index_t li           # leaf being filled (-1 before the first push)
    index_t left         # slots still to fill in it
    index_t written
    addr_t mapped
    addr_t prev_last


cdef struct Finger:     # where the previous search ended: leaf li (-1: none), slot j
    index_t li
    index_t j


cdef class Extent:
    # One extent, as C integers; behaves as the tuple (start, length, target, label).
    cdef readonly addr_t start
    cdef readonly addr_t length
    cdef readonly addr_t target
    cdef readonly label_t label
    cdef tuple as_tuple(self)


cdef struct MapView:     # what a search needs; lives inside its ExtentMap (its address is stable)
    Leaf** leaves        # leaves in address order
    addr_t* fence        # fence[i] == leaves[i].start[0], contiguous for fast search
    index_t nleaves


cdef enum QueryMode:
    Q_TRANSLATE     # out_addr[i] = translation (or the fill value)
    Q_LOOKUP        # out_index[i] = rank of the extent, or -1
    Q_CONTAINS      # out_found[i] = 0 / 1
    Q_LABEL         # out_index[i] = label of the extent, or -1


cdef class ExtentMap:
    cdef MapView v              # leaves and fences (see MapView)
    cdef index_t leaves_alloc   # slots allocated in leaves[] and fence[]
    cdef index_t cap            # extents per leaf
    cdef index_t count          # extents in the map
    cdef addr_t granule
    cdef addr_t mapped          # bytes mapped, modulo 2**64 (see mapped_bytes)
    cdef index_t* prefix        # prefix[i] = extents before leaf i; valid when prefix_ok
    cdef bint prefix_ok
    cdef index_t readers        # batch readers running without the GIL
    cdef bint writing           # a batch mutation is running without the GIL
    cdef Py_ssize_t version     # bumped by every mutation (iterators check it)

    # --- C-level entry points for Cython code (no GIL, no Python objects) ---
    # Translate one address: store target + (addr - start) in *out, return True, or
    # return False when addr is unmapped.  The caller must not mutate the map meanwhile.
    cdef bint translate_c(self, addr_t addr, addr_t* out) noexcept nogil
    # Find the extent holding addr: its leaf and slot, True; or False when unmapped.
    cdef bint locate(self, addr_t addr, index_t* li, index_t* j) noexcept nogil

    # --- internals (bodies and intent in extentmap.pyx) ---
    # Searches.
    cdef index_t find_leaf(self, addr_t addr) noexcept nogil
    cdef bint overlaps(self, addr_t start, addr_t last) noexcept nogil
    cdef index_t leaf_of_rank(self, index_t i) noexcept
    cdef index_t holes(self, addr_t a, addr_t b_last, addr_t* starts, addr_t* lengths) noexcept nogil
    # Mutations: 0 on success, -1 when out of memory (the map is then unchanged);
    # batch ones return a status code and the offending index in *bad.
    cdef index_t min_spare(self) noexcept nogil
    cdef int insert_c(self, addr_t start, addr_t last, addr_t target, label_t label) noexcept nogil
    cdef int remove_c(self, addr_t start, addr_t last, addr_t* removed) noexcept nogil
    cdef int insert_each(self, const Batch* b, index_t n, index_t* bad) noexcept nogil
    cdef int merge_rebuild(self, const Batch* b, index_t n, index_t* bad) noexcept nogil
    cdef void install(self, Builder* b) noexcept nogil
    cdef addr_t last_byte(self) noexcept nogil
    cdef int append_sorted(self, const Batch* b, index_t n) noexcept nogil
    cdef int grow_top(self, index_t need) noexcept nogil
    cdef int split_leaf(self, index_t li, index_t h) noexcept nogil
    cdef void drop_leaves(self, index_t first, index_t stop) noexcept nogil
    cdef void rebalance(self, index_t li) noexcept nogil
    cdef void free_all(self) noexcept nogil
    # Python-level helpers (argument checks, guards, results).
    cdef add_batch(self, starts, lengths, targets, labels)
    cdef fill_arrays(self, out)
    cdef index_query(self, addrs, QueryMode mode)
    cdef int check_range(self, start, length, addr_t* first, addr_t* last) except -1
    cdef tuple window(self, lo, hi)
    cdef object make_extent(self, Leaf* leaf, index_t j)
    cdef int ensure_prefix(self) except -1
    cdef int check_not_writing(self) except -1
    cdef int check_mutable(self) except -1
    cdef int begin_read(self) except -1
    cdef int begin_write(self) except -1
    cdef int changed(self) except -1


# Find the extent holding addr starting from the finger's previous answer (cheap when
# successive addresses are close); the finger must start as li = -1.
cdef bint finger_find(const MapView* v, Finger* f, addr_t addr) noexcept nogil

# Answer n queries in one pass without the GIL (sorting them first for locality when many).
# Returns the caller's index of the first unmapped address when translating without a fill
# value (-1 if none), or -2 when out of memory.  Q_LOOKUP needs m.ensure_prefix() first.
cdef index_t query_batch(ExtentMap m, const addr_t* q, index_t n, QueryMode mode,
                         addr_t* out_addr, int64_t* out_index, uint8_t* out_found,
                         bint fill, addr_t fill_value) noexcept nogil


cdef inline bint seek(const MapView* v, addr_t addr, Finger* f) noexcept nogil:
    """Put the finger on the first extent whose last byte is >= addr; False if there is none."""
    cdef Leaf* leaf
    f.li = last_le(v.fence, 0, v.nleaves, addr)
    f.j = 0
    if f.li < 0:
        f.li = 0
        return v.nleaves > 0
    leaf = v.leaves[f.li]
    f.j = last_le(leaf.start, 0, leaf.n, addr)
    if leaf.last[f.j] < addr:
        return advance(v, f)
    return True


cdef inline bint advance(const MapView* v, Finger* f) noexcept nogil:
    """Move the finger to the next extent in address order; False past the last one."""
    f.j += 1
    if f.j == v.leaves[f.li].n:
        f.li += 1
        f.j = 0
    return f.li < v.nleaves

# An int in 0 .. 2**64-1 from a Python object, or a dcdmap error naming `what`.
cdef addr_t to_u64(object value, str what) except? 0xFFFFFFFFFFFFFFFF


cdef inline bint view_translate(const MapView* v, addr_t addr, addr_t* out) noexcept nogil:
    """Translate addr through the map behind v: True and *out, or False when unmapped."""
    cdef index_t li = last_le(v.fence, 0, v.nleaves, addr), j
    cdef Leaf* leaf
    if li < 0:
        return False
    leaf = v.leaves[li]
    j = last_le(leaf.start, 0, leaf.n, addr)
    if addr > leaf.last[j]:
        return False
    out[0] = leaf.target[j] + (addr - leaf.start[j])
    return True

# Building a map from extents in address order (the caller guarantees they are aligned and
# do not wrap): init for `total` extents, push them in order (1 = overlaps the previous one,
# -1 = out of memory), then ExtentMap.install() the result, or discard it.
cdef int builder_init(Builder* b, index_t total, index_t cap) noexcept nogil
cdef int builder_push(Builder* b, addr_t start, addr_t last, addr_t target, label_t label) noexcept nogil
cdef void builder_discard(Builder* b) noexcept nogil

# Move a batch's arrays into the order of `order` (a sort by start), as malloc'd copies.
cdef int sort_batch(Batch* b, const KeyIndex* order, index_t n) noexcept nogil
cdef void batch_free(Batch* b) noexcept nogil
