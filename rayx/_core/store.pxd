# Declarations of the object store wrapper, for modules that cimport it and
# want to reach the arena or a buffer's bytes at C speed.

from libc.stdint cimport uint8_t
from rayx._core.includes.arena cimport CArena


cdef class Arena:
    cdef CArena* _arena                 # NULL once closed
    cdef readonly str path
    cdef Py_ssize_t _exports            # live ObjectBuffers + writable views
    cdef Py_ssize_t _calls              # calls in progress (they may release the GIL)
    cdef bint _closing                  # close() called while exports or calls were alive

    cdef int _check_open(self) except -1
    cdef int _begin_call(self) except -1
    cdef void _end_call(self) noexcept
    cdef void _export_ended(self) noexcept
    cdef void _unmap_if_unused(self) noexcept


cdef class ObjectBuffer:
    cdef Arena _arena                   # keeps the mapping alive
    cdef readonly bytes object_id
    cdef uint8_t* _data
    cdef Py_ssize_t _size
    cdef Py_ssize_t _views              # memoryviews currently exported
    cdef bint _pinned                   # holds one pin until released

    cdef void _unpin(self) noexcept


cdef class _WritableBuffer:
    cdef Arena _arena
    cdef bytes _object_id
    cdef uint8_t* _data
    cdef Py_ssize_t _size
