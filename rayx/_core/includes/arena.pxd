# Declarations of the C++ shared-memory arena (cpp/arena.h, cpp/status.h).
#
# Every fallible call returns a Status; rayx/_core/store.pyx passes each one to
# its check_status(), the single place where codes become exceptions of
# rayx/exceptions.py. Calls that may block on the cross-process mutex or run
# long are declared nogil so the wrapper can release the GIL around them.

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
