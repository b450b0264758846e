# Searching sorted uint64 arrays: inline C, shared by every engine module.
from dcdmap._core._types cimport addr_t, index_t


cdef inline index_t last_le(const addr_t* a, index_t lo, index_t hi, addr_t key) noexcept nogil:
    """The last i in [lo, hi) with a[i] <= key, or lo - 1 when there is none."""
    cdef index_t mid
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)
        if a[mid] <= key:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


cdef inline index_t gallop_le(const addr_t* a, index_t lo, index_t hi, addr_t key) noexcept nogil:
    """Like last_le, knowing a[lo] <= key: cheap when the answer is near lo."""
    cdef index_t step = 1
    while lo + step < hi and a[lo + step] <= key:
        lo += step
        step <<= 1
    return last_le(a, lo + 1, lo + step if lo + step < hi else hi, key)
