# cython: language_level=3
# distutils: language = c++
# distutils: sources = cpp/status.cc cpp/journal.cc cpp/robust_mutex.cc cpp/allocator.cc cpp/arena.cc
"""The node's shared-memory object store, as seen from Python.

An :class:`Arena` is one process's handle on the node's arena: a file in
/dev/shm that every process of the node maps, whose allocator, object table,
pins and LRU list live inside the file and are shared by all (see
cpp/arena.h). Objects are created (a writable view), filled, sealed, and from
then on read by any process of the node through :class:`ObjectBuffer`, a
read-only, zero-copy buffer: ``np.frombuffer(arena.get(oid), dtype)`` points
straight into shared memory.

PINS AND LIFETIMES. ``get`` pins the object for this process; the pin is held
by the ObjectBuffer and released when the buffer is deallocated -- that is,
after the last memoryview or numpy array built on it is gone -- or by an
explicit ``release()`` when no view is alive. A pinned object is never freed or
offered for eviction; ``delete`` of a pinned object is deferred until the last
pin goes. Buffers and writable views keep their Arena alive, and ``close()``
never unmaps memory a live view points to: it waits for the last one.

ERRORS. Every C++ call returns a status code and :func:`check_status` is the
one place where codes become exceptions of :mod:`rayx.exceptions`.

THE GIL. Short calls (create_object, seal, abort, get, release, delete,
contains, stats) keep the GIL unless they must wait for the arena's
cross-process lock, and then release it for the wait (see
includes/arena.pxd); the long ones release it throughout. While a call runs
the Arena counts it, so a ``close()`` from another thread meanwhile waits for
it as it waits for live buffers.

COUNTERS. :func:`debug_counters` tells how many ObjectBuffers this process
pinned and released, how many memoryviews they and the writable views
exported and released, and how many Arena handles it opened and unmapped:
plain C integers, always kept, that tests/conftest.py checks balance after
every test that leaves no rayx session connected.

FORK. An Arena inherited by a forked child works in the child, which takes a
process slot of its own on first use; buffers inherited from the parent are
not the child's pins and are dropped without effect.
"""

import os

cimport cython
from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBuffer_FillInfo, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.vector cimport vector

from rayx._core.includes.arena cimport (
    ArenaOptions, ArenaStats, CArena, LockWaitHooks, ObjectId, SetLockWaitHooks, Status,
    StatusMessage, kBadSegment, kCorrupted, kObjectExists, kObjectNotFound, kObjectNotSealed, kOk,
    kOutOfMemory, kSystemError, kTableFull)

from rayx.exceptions import (ArenaError, ObjectExistsError, ObjectNotFoundError,
                             ObjectStoreFullError)

cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    int PyGILState_Check() nogil
    PyThreadState* PyEval_SaveThread() nogil
    void PyEval_RestoreThread(PyThreadState* state) nogil

OBJECT_ID_SIZE = 20


# ---------------------------------------------------------------------------
# Waiting for the arena lock without the GIL (LockWaitHooks, cpp/arena.h).

cdef void* _release_gil_for_lock_wait() noexcept nogil:
    # Called by a locking call about to wait; callers inside `with nogil` hold no GIL.
    if PyGILState_Check():
        return PyEval_SaveThread()
    return NULL


cdef void _retake_gil_after_lock_wait(void* saved) noexcept nogil:
    # Called once the waiting call has released the arena lock.
    if saved != NULL:
        PyEval_RestoreThread(<PyThreadState*>saved)


cdef LockWaitHooks _gil_hooks
_gil_hooks.begin_wait = _release_gil_for_lock_wait
_gil_hooks.end_wait = _retake_gil_after_lock_wait
SetLockWaitHooks(_gil_hooks)


# ---------------------------------------------------------------------------
# Counters of this process (debug_counters), changed with the GIL held.

cdef Py_ssize_t _buffers_pinned = 0       # ObjectBuffers get() returned
cdef Py_ssize_t _buffers_released = 0     # ... whose pin was released (release() or dealloc)
cdef Py_ssize_t _views_exported = 0       # buffer-protocol views of ObjectBuffers and writables
cdef Py_ssize_t _views_released = 0
cdef Py_ssize_t _arenas_opened = 0        # Arena.create / Arena.attach
cdef Py_ssize_t _arenas_unmapped = 0      # ... whose C++ arena was detached and unmapped


def debug_counters():
    """This process's counts of pins, views and arena handles (a dict); each
    "made" count equals its "ended" count once nothing holds a buffer."""
    return {
        "buffers_pinned": _buffers_pinned,
        "buffers_released": _buffers_released,
        "views_exported": _views_exported,
        "views_released": _views_released,
        "arenas_opened": _arenas_opened,
        "arenas_unmapped": _arenas_unmapped,
    }


cdef int check_status(Status status, CArena* arena=NULL, object object_id=None,
                      uint64_t size=0, object path=None, object detail=None) except -1:
    """Raises the exception of rayx.exceptions that `status` stands for.

    The only place where arena status codes become exceptions. `arena`,
    `object_id`, `size`, `path` and `detail` only enrich the message (cdef
    functions take no keywords: callers pass them by position).
    """
    cdef int saved_errno = errno
    cdef ArenaStats stats
    if status == kOk:
        return 0
    message = StatusMessage(status).decode()
    subject = f"object {object_id.hex()}" if object_id is not None else "arena"
    if status == kOutOfMemory or status == kTableFull:
        if arena != NULL and arena.Stats(&stats) == kOk:
            if status == kOutOfMemory:
                raise ObjectStoreFullError(
                    f"cannot create {subject} of {size} bytes: the arena has {stats.bytes_free} "
                    f"bytes free, its largest free block holds {stats.largest_free_block} bytes "
                    f"(capacity {stats.capacity}, {stats.num_objects} objects, "
                    f"{stats.num_pinned} pinned)")
            raise ObjectStoreFullError(
                f"cannot create {subject} of {size} bytes: the object table is full "
                f"({stats.object_entries} entries)")
        raise ObjectStoreFullError(f"cannot create {subject} of {size} bytes: {message}")
    if status == kObjectExists:
        raise ObjectExistsError(f"{subject} already exists in the arena")
    if status == kObjectNotFound:
        raise ObjectNotFoundError(f"{subject} is not in the arena")
    if status == kSystemError:
        raise ArenaError(saved_errno, f"{message}: {os.strerror(saved_errno)}", path)
    if detail:
        message = f"{message}: {detail}"
    if status == kBadSegment or status == kCorrupted:
        raise ArenaError(f"{path or 'arena'}: {message}")
    raise ArenaError(f"{subject}: {message}")


cdef inline const ObjectId* as_key(object object_id) except NULL:
    if not isinstance(object_id, bytes):
        raise TypeError(f"object ids are bytes, not {type(object_id).__name__}")
    if len(<bytes>object_id) != OBJECT_ID_SIZE:
        raise ValueError(f"object ids are {OBJECT_ID_SIZE} bytes, not {len(<bytes>object_id)}")
    return <const ObjectId*>PyBytes_AS_STRING(object_id)


@cython.final
cdef class Arena:
    """One process's handle on the node's shared-memory arena.

    Build it with :meth:`create` or :meth:`attach`. Several Arenas (on the
    same or different files) may live in one process.
    """

    def __init__(self):
        raise TypeError("use Arena.create(path, capacity) or Arena.attach(path)")

    @staticmethod
    def create(str path not None, capacity, bint populate=False, object_entries=0):
        """Creates and formats the arena file `path` (which must not exist).

        `capacity` is the file's size in bytes; `populate` faults every page
        in now (slow to create, fast to fill); `object_entries` sizes the
        object table (default: one entry per 4 KiB, at least 4096).
        """
        cdef Arena self = Arena.__new__(Arena)
        cdef CArena* raw = NULL
        cdef string encoded = os.fsencode(path)
        cdef ArenaOptions options
        cdef uint64_t size = capacity
        cdef Status status
        options.populate = populate
        options.object_entries = object_entries
        with nogil:
            status = CArena.Create(encoded, size, options, &raw)
        check_status(status, NULL, None, 0, path)
        self._arena = raw
        self.path = path
        global _arenas_opened
        _arenas_opened += 1
        return self

    @staticmethod
    def attach(str path not None):
        """Maps the existing arena file `path` and takes a process slot."""
        cdef Arena self = Arena.__new__(Arena)
        cdef CArena* raw = NULL
        cdef string encoded = os.fsencode(path)
        cdef Status status
        with nogil:
            status = CArena.Attach(encoded, &raw)
        check_status(status, NULL, None, 0, path)
        self._arena = raw
        self.path = path
        global _arenas_opened
        _arenas_opened += 1
        return self

    def __dealloc__(self):
        # Buffers and calls hold a reference, so none is alive here.
        global _arenas_unmapped
        if self._arena != NULL:
            with nogil:
                del self._arena
            self._arena = NULL
            _arenas_unmapped += 1

    cdef int _check_open(self) except -1:
        if self._arena == NULL or self._closing:
            raise ArenaError(f"{self.path}: the arena is closed")
        return 0

    cdef int _begin_call(self) except -1:
        self._check_open()
        self._calls += 1
        return 0

    cdef void _end_call(self) noexcept:
        self._calls -= 1
        self._unmap_if_unused()

    cdef void _export_ended(self) noexcept:
        self._exports -= 1
        self._unmap_if_unused()

    cdef void _unmap_if_unused(self) noexcept:
        # The real close() of an arena closed while buffers or calls were alive.
        global _arenas_unmapped
        if self._exports == 0 and self._calls == 0 and self._closing and self._arena != NULL:
            del self._arena
            self._arena = NULL
            _arenas_unmapped += 1

    @property
    def capacity(self):
        self._check_open()
        return self._arena.capacity()

    @property
    def base_address(self):
        """Address where this process mapped the arena."""
        self._check_open()
        return <uintptr_t>self._arena.base()

    @property
    def closed(self):
        return self._arena == NULL or self._closing

    @property
    def live_buffers(self):
        """ObjectBuffers and writable views of this Arena still alive."""
        return self._exports

    def create_object(self, bytes object_id, size):
        """Allocates an unsealed object; returns a writable view of its payload.

        Fill the view, then :meth:`seal` (or :meth:`abort`). Raises
        ObjectExistsError, or ObjectStoreFullError naming the size asked and
        what is free.
        """
        cdef const ObjectId* key = as_key(object_id)
        cdef uint64_t offset = 0
        if size < 0:
            raise ValueError(f"object size must be >= 0, not {size}")
        self._begin_call()
        try:
            check_status(self._arena.CreateObject(key[0], size, &offset), self._arena, object_id,
                         size)
        finally:
            self._end_call()
        cdef _WritableBuffer writable = _WritableBuffer.__new__(_WritableBuffer)
        writable._arena = self
        writable._object_id = object_id
        writable._data = self._arena.base() + offset
        writable._size = size
        self._exports += 1
        return memoryview(writable)

    def seal(self, bytes object_id):
        """Makes a created object immutable and visible to get()."""
        cdef const ObjectId* key = as_key(object_id)
        self._begin_call()
        try:
            check_status(self._arena.Seal(key[0]), self._arena, object_id)
        finally:
            self._end_call()

    def abort(self, bytes object_id):
        """Frees an object that was created but not sealed."""
        cdef const ObjectId* key = as_key(object_id)
        self._begin_call()
        try:
            check_status(self._arena.Abort(key[0]), self._arena, object_id)
        finally:
            self._end_call()

    def put(self, bytes object_id, data):
        """Creates, fills (copying without the GIL) and seals an object.

        `data` is any C- or Fortran-contiguous buffer (bytes, bytearray,
        memoryview, numpy array...); its bytes are copied as they are.
        """
        cdef const ObjectId* key = as_key(object_id)
        cdef Py_buffer view
        cdef uint64_t offset = 0
        cdef uint8_t* destination
        cdef Status status
        PyObject_GetBuffer(data, &view, PyBUF_ANY_CONTIGUOUS)
        try:
            self._begin_call()
            try:
                check_status(self._arena.CreateObject(key[0], view.len, &offset), self._arena,
                             object_id, view.len)
                destination = self._arena.base() + offset
                with nogil:
                    memcpy(destination, view.buf, view.len)
                    status = self._arena.Seal(key[0])
                check_status(status, self._arena, object_id)
            finally:
                self._end_call()
        finally:
            PyBuffer_Release(&view)

    def get(self, bytes object_id):
        """Pins a sealed object and returns a read-only ObjectBuffer over it.

        Returns None if the object is absent, unsealed or being deleted.
        """
        global _buffers_pinned
        cdef const ObjectId* key = as_key(object_id)
        cdef uint64_t offset = 0, size = 0
        cdef Status status
        cdef ObjectBuffer buffer = ObjectBuffer.__new__(ObjectBuffer)
        self._begin_call()
        try:
            status = self._arena.Get(key[0], &offset, &size)
            if status == kObjectNotFound or status == kObjectNotSealed:
                return None
            check_status(status, self._arena, object_id)
            buffer._arena = self
            buffer.object_id = object_id
            buffer._data = self._arena.base() + offset
            buffer._size = size
            buffer._pinned = True
            self._exports += 1
            _buffers_pinned += 1
            return buffer
        finally:
            self._end_call()

    def contains(self, bytes object_id):
        """True if the object is present and sealed (and not being deleted)."""
        cdef const ObjectId* key = as_key(object_id)
        cdef cbool present = False
        self._begin_call()
        try:
            check_status(self._arena.Contains(key[0], &present), self._arena, object_id)
        finally:
            self._end_call()
        return present

    def __contains__(self, object_id):
        return self.contains(object_id)

    def delete(self, bytes object_id):
        """Deletes a sealed object; returns False if there is none.

        A pinned object is freed when its last pin goes; from now on get()
        and contains() do not see it. Deleting an unsealed object raises
        ArenaError (use abort).
        """
        cdef const ObjectId* key = as_key(object_id)
        cdef cbool deferred = False
        cdef Status status
        self._begin_call()
        try:
            status = self._arena.Delete(key[0], &deferred)
            if status == kObjectNotFound:
                return False
            check_status(status, self._arena, object_id)
        finally:
            self._end_call()
        return True

    def lru_candidates(self, nbytes):
        """Unpinned sealed objects, least recently used first, whose sizes add
        up to at least `nbytes` (fewer if there are not enough)."""
        cdef vector[ObjectId] ids
        cdef uint64_t wanted = nbytes
        cdef Status status
        self._begin_call()
        try:
            with nogil:
                status = self._arena.LruCandidates(wanted, &ids)
            check_status(status, self._arena)
        finally:
            self._end_call()
        return [PyBytes_FromStringAndSize(<const char*>ids[i].bytes, OBJECT_ID_SIZE)
                for i in range(ids.size())]

    def release_pins_of(self, int pid):
        """Drops every pin held by the (dead) process `pid`, aborts the objects
        it created but never sealed, frees its process slots; returns the
        number of pins dropped. Never pass the pid of a live process."""
        cdef uint64_t pins = 0, aborted = 0
        cdef Status status
        self._begin_call()
        try:
            with nogil:
                status = self._arena.ReleasePinsOf(pid, &pins, &aborted)
            check_status(status, self._arena)
        finally:
            self._end_call()
        return pins

    def prefault(self, offset=0, length=-1):
        """Faults in the pages of [offset, offset + length) for writing (all
        of the arena from `offset` if length is -1) without changing a byte.
        Runs without the GIL; meant for a background thread."""
        cdef uint64_t start = offset
        cdef uint64_t count = 0 if length == -1 else length
        cdef Status status
        self._check_open()
        if length == 0:
            return
        self._begin_call()
        try:
            with nogil:
                status = self._arena.Prefault(start, count)
            check_status(status, self._arena, None, 0, None, f"prefault({offset}, {length})")
        finally:
            self._end_call()

    def stats(self):
        """Capacity and accounting of the arena (a snapshot, as a dict)."""
        cdef ArenaStats stats
        self._begin_call()
        try:
            check_status(self._arena.Stats(&stats), self._arena)
        finally:
            self._end_call()
        return {
            "capacity": stats.capacity,
            "heap_size": stats.heap_size,
            "allocated": stats.bytes_allocated,
            "free": stats.bytes_free,
            "largest_free_block": stats.largest_free_block,
            "allocated_blocks": stats.allocated_blocks,
            "free_blocks": stats.free_blocks,
            "object_bytes": stats.object_bytes,
            "num_objects": stats.num_objects,
            "num_sealed": stats.num_sealed,
            "num_pinned": stats.num_pinned,
            "num_evictable": stats.num_lru,
            "num_processes": stats.num_processes,
            "object_entries": stats.object_entries,
            "recoveries": stats.recoveries,
            # Counters (always kept; the debug build's tests assert they balance).
            "allocations": stats.allocations,
            "frees": stats.frees,
            "pins": stats.pins,
            "releases": stats.releases,
        }

    def validate(self):
        """Checks every invariant of the arena; raises ArenaError if one is broken."""
        cdef string error
        cdef Status status
        self._begin_call()
        try:
            with nogil:
                status = self._arena.Validate(&error)
            check_status(status, self._arena, None, 0, self.path, error.decode(errors="replace"))
        finally:
            self._end_call()

    def close(self):
        """Detaches (drops this process's pins and slot) and unmaps.

        While ObjectBuffers or writable views are alive (or calls of other
        threads run), the arena is only marked closed (no new operations) and
        the real close happens when the last of them goes. Idempotent.
        """
        global _arenas_unmapped
        if self._arena == NULL:
            return
        self._closing = True
        if self._exports == 0 and self._calls == 0:
            with nogil:
                del self._arena
            self._arena = NULL
            _arenas_unmapped += 1

    def unlink(self, bint missing_ok=False):
        """Removes the arena file (processes that map it keep their memory)."""
        cdef string encoded = os.fsencode(self.path)
        cdef Status status = CArena.Unlink(encoded)
        if status == kSystemError and missing_ok and errno == 2:  # ENOENT
            return
        check_status(status, NULL, None, 0, self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"capacity={self._arena.capacity()}"
        return f"<rayx Arena {self.path!r} {state}>"

    # Test hooks -----------------------------------------------------------

    def _lock_and_hang(self, int notify_fd=-1):
        """Takes the arena lock, writes a byte to `notify_fd` and sleeps
        forever. For tests, in a child process that is then SIGKILLed."""
        self._begin_call()
        with nogil:
            self._arena.DebugLockAndHang(notify_fd)

    def _crash_after_writes(self, uint32_t n):
        """Makes the n-th metadata write from now SIGKILL this process
        (0 switches it off). For tests of crash recovery."""
        self._check_open()
        self._arena.DebugCrashAfterWrites(n)


@cython.final
@cython.no_gc_clear
cdef class ObjectBuffer:
    """A read-only, zero-copy view of a sealed object, holding one pin on it.

    Supports the buffer protocol (``memoryview(buf)``, ``np.frombuffer(buf)``).
    The pin is released when the buffer is deallocated, after the last view
    built on it is gone, or by :meth:`release` when no view is alive.
    """

    def __init__(self):
        raise TypeError("ObjectBuffers come from Arena.get()")

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if not self._pinned:
            raise BufferError("the ObjectBuffer was released")
        global _views_exported
        PyBuffer_FillInfo(buffer, self, self._data, self._size, 1, flags)
        self._views += 1
        _views_exported += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        global _views_released
        self._views -= 1
        _views_released += 1

    @property
    def size(self):
        return self._size

    @property
    def address(self):
        return <uintptr_t>self._data

    def __len__(self):
        return self._size

    def release(self):
        """Releases the pin now. Raises BufferError while views are alive."""
        if self._views > 0:
            raise BufferError(f"{self._views} views of the object are still alive")
        self._unpin()

    cdef void _unpin(self) noexcept:
        global _buffers_released
        cdef const ObjectId* key
        if not self._pinned:
            return
        self._pinned = False
        _buffers_released += 1
        key = <const ObjectId*>PyBytes_AS_STRING(self.object_id)
        # kNotPinned for a buffer inherited across fork: not ours, nothing to do.
        self._arena._arena.Release(key[0])
        self._arena._export_ended()

    def __dealloc__(self):
        if self._arena is not None:
            self._unpin()

    def __repr__(self):
        hex_id = self.object_id.hex() if self.object_id is not None else "?"
        return f"<rayx ObjectBuffer {hex_id} size={self._size}{'' if self._pinned else ' released'}>"


@cython.final
@cython.no_gc_clear
cdef class _WritableBuffer:
    """Exporter of the writable payload of an unsealed object (create_object).
    Keeps its Arena mapped while any view of it is alive."""

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        global _views_exported
        PyBuffer_FillInfo(buffer, self, self._data, self._size, 0, flags)
        _views_exported += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        global _views_released
        _views_released += 1

    def __dealloc__(self):
        if self._arena is not None:
            self._arena._export_ended()
