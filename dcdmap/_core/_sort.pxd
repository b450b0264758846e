from dcdmap._core._types cimport addr_t, index_t

cdef struct KeyIndex:
    addr_t key      # the sort key (an address)
    index_t index   # where it stood in the caller's array

# Stable LSD radix sort of ``keys`` by the bits at and above ``lo_bit``; returns a malloc'd
# array of n (key, index) pairs in that order (the caller frees it), or NULL when out of memory.
cdef KeyIndex* sort_by_key(const addr_t* keys, index_t n, int lo_bit) noexcept nogil

# True when keys[0..n) never decreases.
cdef bint is_sorted(const addr_t* keys, index_t n) noexcept nogil

# The number of significant bits in (max key XOR min key): the bits that vary across keys.
cdef int varying_bits(const addr_t* keys, index_t n) noexcept nogil

# Batch queries: the order in which to answer them so that neighbours in the map come
# together: NULL when they are already sorted (answer them as given), else a malloc'd
# order by their top 22 varying bits (*failed is set when out of memory).
cdef KeyIndex* locality_order(const addr_t* keys, index_t n, bint* failed) noexcept nogil
