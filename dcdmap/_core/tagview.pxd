# Tag views (bodies and the algorithms' essay in tagview.pyx).
from dcdmap._core._types cimport addr_t, index_t
from dcdmap._core.extentmap cimport ExtentMap


cdef class TagView:
    cdef ExtentMap fwd              # logical offset -> host address (None when interleaved)
    cdef ExtentMap rev              # host address -> logical offset (strip space when interleaved)
    cdef readonly bint shareable    # placed by sequence number (else in arrival order)
    cdef readonly index_t count     # extents (strips) in the view
    cdef addr_t chunk               # interleave chunk size; 0 = concatenated
    cdef addr_t strip_len           # interleaved: the length of every strip
    cdef object strips              # interleaved: strip host starts (uint64 array, owns the memory)
    cdef const addr_t* strip_starts # ... and its data, for nogil code

    # Logical offset -> host address: True and *out, or False past the end.  No GIL needed.
    cdef bint translate_c(self, addr_t offset, addr_t* out) noexcept nogil
    # Host address -> logical offset: True and *out, or False when the view does not hold it.
    cdef bint reverse_c(self, addr_t addr, addr_t* out) noexcept nogil

    cdef int place(self, q_arr, index_t[::1] order, index_t* bad, index_t* other) except -1
    cdef init_interleave(self, s_arr, l_arr, host, lens, order, chunk_size, nstrips, granule)
    cdef batch(self, values, missing, bint forward)
