# Declarations of the C++ shared-memory arena (cpp/arena.h, cpp/status.h).
#
# Every fallible call returns a Status; rayx/_core/store.pyx passes each one to
# its check_status(), the single place where codes become exceptions of
# rayx/exceptions.py. Everything here is declared nogil: none of it touches a
# Python object.
#
# THE GIL. Every call but base, capacity, Prefault, Unlink and
# DebugCrashAfterWrites takes the arena's cross-process mutex. store.pyx makes
# the short ones (CreateObject, Seal, Abort, Get, Release, Delete, Contains,
# Stats, and the destructor when a closed arena's last buffer goes) with the
# GIL held: uncontended, they never release it (releasing it for a few hundred
# nanoseconds buys nothing, and in a process whose other threads are busy,
# getting it back can take a whole switch interval).
# When the mutex is held by another thread or process, the call waits, and for
# that wait only -- from just before it blocks until the operation is over and
# the mutex released -- the LockWaitHooks store.pyx installs release the GIL
# (SetLockWaitHooks; see "LOCK WAITS" in cpp/arena.h). The calls that run long
# whatever the lock (Create, Attach, LruCandidates, ReleasePinsOf, Prefault,
# Validate, DebugLockAndHang, the destructor in close() and when an Arena is
# deallocated) and put()'s copy and Seal are made inside `with nogil`.

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.vector cimport vector
from posix.types cimport pid_t


cdef extern from "status.h" namespace "rayx" nogil:
    cdef enum Status:
        kOk
        kObjectExists
        kOutOfMemory
        kTableFull
        kObjectNotFound
        kObjectNotSealed
        kObjectAlreadySealed
        kNotPinned
        kPinTableFull
        kProcessTableFull
        kInvalidArgument
        kSystemError
        kBadSegment
        kLockNotRecoverable
        kCorrupted

    const char* StatusMessage(Status status)


cdef extern from "arena.h" namespace "rayx" nogil:
    const int kObjectIdSize

    cdef struct ObjectId:
        uint8_t bytes[20]

    cdef cppclass ArenaOptions:
        uint64_t object_entries
        cbool populate

    cdef struct ArenaStats:
        uint64_t capacity
        uint64_t heap_size
        uint64_t bytes_allocated
        uint64_t bytes_free
        uint64_t largest_free_block
        uint64_t allocated_blocks
        uint64_t free_blocks
        uint64_t object_bytes
        uint64_t num_objects
        uint64_t num_sealed
        uint64_t num_pinned
        uint64_t num_lru
        uint64_t num_processes
        uint64_t object_entries
        uint64_t allocations
        uint64_t frees
        uint64_t pins
        uint64_t releases
        uint64_t recoveries

    cdef cppclass LockWaitHooks:
        void* (*begin_wait)() noexcept nogil
        void (*end_wait)(void* token) noexcept nogil

    void SetLockWaitHooks(const LockWaitHooks& hooks)

    cdef cppclass CArena "rayx::Arena":
        @staticmethod
        Status Create(const string& path, uint64_t capacity, const ArenaOptions& options,
                      CArena** out)
        @staticmethod
        Status Attach(const string& path, CArena** out)
        @staticmethod
        Status Unlink(const string& path)

        Status Detach()
        uint8_t* base()
        uint64_t capacity()

        Status CreateObject(const ObjectId& id, uint64_t size, uint64_t* offset)
        Status Seal(const ObjectId& id)
        Status Abort(const ObjectId& id)
        Status Get(const ObjectId& id, uint64_t* offset, uint64_t* size)
        Status Release(const ObjectId& id)
        Status Delete(const ObjectId& id, cbool* deferred)
        Status Contains(const ObjectId& id, cbool* present)
        Status LruCandidates(uint64_t nbytes, vector[ObjectId]* out)
        Status ReleasePinsOf(pid_t pid, uint64_t* pins_released, uint64_t* objects_aborted)
        Status Prefault(uint64_t offset, uint64_t length)
        Status Stats(ArenaStats* stats)
        Status Validate(string* error)

        void DebugLockAndHang(int notify_fd)
        void DebugCrashAfterWrites(uint32_t n)
