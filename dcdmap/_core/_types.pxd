# The engine's C types, declared once (STYLE §1).  Addresses, lengths and targets are
# always uint64_t; counts, indices and output lengths are always Py_ssize_t.  Nothing in
# the engine uses a bare C ``int`` for a size.
from libc.stdint cimport uint64_t, uint32_t, int64_t, uint8_t

ctypedef uint64_t addr_t      # an address, a length, a target
ctypedef uint32_t label_t     # the caller's small integer (tag index, host id, ...)
ctypedef Py_ssize_t index_t   # a count or an index

cdef extern from "_config.h":
    # 1 when built with DCDMAP_DEBUG=1: the engine checks its invariants after every mutation.
    const bint DCDMAP_DEBUG
