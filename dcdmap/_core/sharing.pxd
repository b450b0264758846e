# SharingIndex: holder sets of device ranges (bodies and the essay in sharing.pyx).
from libc.stdint cimport uint64_t, int64_t
from dcdmap._core._types cimport addr_t, label_t, index_t
from dcdmap._core.extentmap cimport ExtentMap


cdef class SharingIndex:
    cdef ExtentMap m                 # elementary ranges, identity targets, label = holder-set id
    cdef uint64_t* masks             # holder-set id -> bitmask of hosts
    cdef index_t nmasks, masks_alloc
    cdef uint64_t* table_keys        # open addressing: bitmask -> id (0 marks a free slot)
    cdef label_t* table_ids
    cdef index_t table_size
    cdef addr_t* buf_start           # scratch for the pieces of one update
    cdef addr_t* buf_last
    cdef uint64_t* buf_mask
    cdef index_t buf_alloc

    cdef int64_t intern(self, uint64_t mask) noexcept nogil
    cdef int compact(self, ExtentMap m) noexcept nogil
    cdef void table_insert(self, uint64_t mask, label_t id) noexcept nogil
    cdef int reserve(self, index_t n) noexcept nogil
    cdef int update(self, ExtentMap m, uint64_t bit, addr_t s, addr_t last, bint adding) noexcept nogil
    cdef void push(self, index_t* n, addr_t start, addr_t last, uint64_t mask) noexcept nogil
    cdef uint64_t host_bit(self, host) except? 0
    cdef change(self, host, start, length, bint adding)
    cdef change_many(self, hosts, starts, lengths, bint adding)
    cdef index_t host_ranges(self, uint64_t bit, addr_t* starts, addr_t* lengths) noexcept nogil
