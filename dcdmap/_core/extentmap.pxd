# ExtentMap: the engine's ordered map of non-overlapping [start, start+length) ranges of
# uint64 addresses, each carrying a target address and a label.  The bodies and the
# header essay (layout, invariants, complexity) are in extentmap.pyx.
from dcdmap._core._types cimport addr_t, label_t, index_t
from dcdmap._core._sort cimport KeyIndex

cdef struct Leaf:
    index_t n             # extents held, 1 <= n <= capacity
    addr_t* start         # first byte of each extent, strictly increasing
    addr_t* last          # last byte (start + length - 1): 2**64 - 1 still fits
    addr_t* target        # what `start` translates to
    label_t* label        # the caller's label


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


cdef class Extent:
    # One extent, as C integers; behaves as the tuple (start, length, target, label).
    cdef readonly addr_t start
    cdef readonly addr_t length
    cdef readonly addr_t target
    cdef readonly label_t label
    cdef tuple as_tuple(self)


cdef class ExtentMap:
    cdef Leaf** leaves          # leaves in address order
    cdef addr_t* fence          # fence[i] == leaves[i].start[0], contiguous for fast search
    cdef index_t nleaves
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
    cdef tuple first_ending_at_or_after(self, addr_t addr)
    cdef index_t leaf_of_rank(self, index_t i) noexcept
    # Mutations: 0 on success, -1 when out of memory (the map is then unchanged);
    # batch ones return a status code and the offending index in *bad.
    cdef int insert_c(self, addr_t start, addr_t last, addr_t target, label_t label) noexcept nogil
    cdef int remove_c(self, addr_t start, addr_t last, addr_t* removed) noexcept nogil
    cdef int insert_each(self, const addr_t* starts, const addr_t* lasts, const addr_t* targets,
                         const label_t* labels, const KeyIndex* order, index_t n, index_t* bad) noexcept nogil
    cdef int merge_rebuild(self, const addr_t* starts, const addr_t* lasts, const addr_t* targets,
                           const label_t* labels, const KeyIndex* order, index_t n, index_t* bad) noexcept nogil
    cdef void install(self, Builder* b) noexcept nogil
    cdef int grow_top(self, index_t need) noexcept nogil
    cdef int split_leaf(self, index_t li, index_t h) noexcept nogil
    cdef void drop_leaves(self, index_t first, index_t stop) noexcept nogil
    cdef void rebalance(self, index_t li) noexcept nogil
    cdef void free_all(self) noexcept nogil
    # Python-level helpers (argument checks, guards, results).
    cdef add_batch(self, starts, lengths, targets, labels)
    cdef fill_arrays(self, out)
    cdef int check_range(self, start, length, addr_t* first, addr_t* last) except -1
    cdef tuple window(self, lo, hi)
    cdef object make_extent(self, Leaf* leaf, index_t j)
    cdef int ensure_prefix(self) except -1
    cdef int check_not_writing(self) except -1
    cdef int check_mutable(self) except -1
    cdef int begin_read(self) except -1
    cdef int begin_write(self) except -1
    cdef int changed(self) except -1
