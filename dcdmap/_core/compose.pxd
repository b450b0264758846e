# Chained translation through ExtentMaps (bodies in compose.pyx).
from dcdmap._core._types cimport addr_t, index_t
from dcdmap._core.extentmap cimport MapView


cdef class Chain:
    cdef readonly tuple maps     # the ExtentMaps, first stage first (kept alive here)
    cdef MapView** stages        # each map's search state, for nogil code
    cdef index_t nstages
    # Translate addr through every stage: store the result in *out and return True, or
    # return False with the first stage that does not map it in *stage.  No GIL needed;
    # the caller must not mutate the maps meanwhile.
    cdef bint translate_c(self, addr_t addr, addr_t* out, index_t* stage) noexcept nogil
