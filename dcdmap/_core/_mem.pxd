# Memory helpers shared by the engine modules (inline C).
from libc.stdlib cimport realloc


cdef inline int grow(void** block, size_t size) noexcept nogil:
    """Resize *block to size bytes in place of the old one: 0, or -1 (block untouched) when
    out of memory.  Growing parallel arrays one by one with it leaves each valid either way."""
    cdef void* q = realloc(block[0], size)
    if q == NULL:
        return -1
    block[0] = q
    return 0
