# Declarations of rayx's fixed-size binary ids, for modules that cimport them
# (objectref.pyx builds TaskIDs) and want C-speed access to the bytes.

from libc.stdint cimport uint64_t

cdef class BaseID:
    cdef bytes _b                              # exactly SIZE bytes, immutable
    cdef Py_ssize_t _size(self)                # the subclass's SIZE

cdef class JobID(BaseID):
    pass

cdef class TaskID(BaseID):
    pass

cdef class ActorID(BaseID):
    pass

cdef class ObjectID(BaseID):
    pass

cdef class NodeID(BaseID):
    pass

cdef class WorkerID(BaseID):
    pass

cdef class FunctionID(BaseID):
    pass

# Deterministic 96-bit hash of (tag, data, counter), written to out[0:12].
cdef void hash96(uint64_t tag, const unsigned char* data, Py_ssize_t n,
                 uint64_t counter, unsigned char* out) noexcept nogil
