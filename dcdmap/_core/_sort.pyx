"""Radix sorting of uint64 keys, for the engine's batch calls.

LSD radix sort with 11-bit digits: one pass over the keys builds every digit's histogram,
then one stable scatter per digit.  A digit on which all keys agree is skipped, so 48-bit
addresses cost at most five scatters, and sorting only the top bits (``lo_bit`` > 0, used
to give a batch of queries locality) costs one or two.  O(n) time, 2n (key, index) pairs
of scratch memory.
"""
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset

from dcdmap._core._types cimport addr_t, index_t


cdef enum:
    LOCALITY_BITS = 22   # enough that the queries of one leaf come out together
    DIGIT_BITS = 11
    RADIX = 1 << DIGIT_BITS
    MAX_PASSES = 6       # ceil(64 / 11)


cdef bint is_sorted(const addr_t* keys, index_t n) noexcept nogil:
    cdef index_t i
    for i in range(1, n):
        if keys[i] < keys[i - 1]:
            return False
    return True


cdef int varying_bits(const addr_t* keys, index_t n) noexcept nogil:
    cdef addr_t diff = 0
    cdef index_t i
    cdef int bits = 0
    for i in range(1, n):
        diff |= keys[i] ^ keys[0]
    while diff:
        bits += 1
        diff >>= 1
    return bits


cdef KeyIndex* sort_by_key(const addr_t* keys, index_t n, int lo_bit) noexcept nogil:
    cdef KeyIndex* a = <KeyIndex*>malloc(<size_t>(n if n > 0 else 1) * sizeof(KeyIndex))
    cdef KeyIndex* b
    cdef KeyIndex* t
    cdef index_t* hist
    cdef index_t i, total, c
    cdef int npass, p, shift
    cdef addr_t k
    cdef bint need[MAX_PASSES]
    if a == NULL:
        return NULL
    for i in range(n):
        a[i].key = keys[i]
        a[i].index = i
    if n < 2 or lo_bit >= 64:
        return a
    npass = (64 - lo_bit + DIGIT_BITS - 1) // DIGIT_BITS
    hist = <index_t*>calloc(npass * RADIX, sizeof(index_t))
    b = <KeyIndex*>malloc(<size_t>n * sizeof(KeyIndex))
    if hist == NULL or b == NULL:
        free(hist); free(b); free(a)
        return NULL
    for i in range(n):
        k = keys[i] >> lo_bit
        for p in range(npass):
            hist[p * RADIX + (k & (RADIX - 1))] += 1
            k >>= DIGIT_BITS
    for p in range(npass):
        shift = lo_bit + p * DIGIT_BITS
        # A digit on which every key agrees leaves the order as it is.
        need[p] = hist[p * RADIX + ((keys[0] >> shift) & (RADIX - 1))] != n
        if not need[p]:
            continue
        total = 0   # histogram -> starting offsets
        for i in range(RADIX):
            c = hist[p * RADIX + i]
            hist[p * RADIX + i] = total
            total += c
        for i in range(n):
            c = (a[i].key >> shift) & (RADIX - 1)
            b[hist[p * RADIX + c]] = a[i]
            hist[p * RADIX + c] += 1
        t = a; a = b; b = t
    free(hist)
    free(b)
    return a


cdef KeyIndex* locality_order(const addr_t* keys, index_t n, bint* failed) noexcept nogil:
    cdef KeyIndex* order
    failed[0] = False
    if is_sorted(keys, n):
        return NULL
    order = sort_by_key(keys, n, max(0, varying_bits(keys, n) - LOCALITY_BITS))
    failed[0] = order == NULL
    return order
