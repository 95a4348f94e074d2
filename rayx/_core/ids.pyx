# cython: language_level=3
"""Fixed-size binary ids: jobs, tasks, actors, objects, nodes, workers, functions.

Every id is an immutable byte string of one fixed size, held by a small cdef
class so that building one from bytes, hashing it and comparing two are a few
C operations (the hash is the hash of the bytes, which CPython caches in the
bytes object itself).

Layout::

    JobID       4   opaque (JobID.from_int gives a little-endian uint32)
    TaskID     16   12 unique bytes + the 4-byte JobID
    ActorID    16   12 unique bytes + the 4-byte JobID
    ObjectID   20   the creating TaskID (16) + little-endian uint32 index
                    (return values 1..N; puts set the top bit 0x80000000)
    NodeID     16   random
    WorkerID   16   random
    FunctionID 20   sha1 of the pickled function

The nil id of every class is all 0xFF bytes (so a nil TaskID still carries no
job, and JobID(b"\\0\\0\\0\\0") is a valid, non-nil job).

DETERMINISM. Ids derived from other ids (a child task of a task, an actor of a
task, a method call of an actor, a return value of a task) are pure functions
of their inputs, so a task that is re-executed after a failure submits children
and creates objects with the very same ids, and lineage reconstruction finds
them. The unique part of a derived TaskID / ActorID is ``hash96``: two 64-bit
lanes absorb the input eight bytes at a time through the splitmix64 finalizer,
then the counter, then each other. It is not cryptographic -- it only has to
spread well and be fast (well under 100 ns), and every derivation has its own
tag so that, e.g., child 7 of a task and actor 7 of the same task differ.
"""

import hashlib
import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy


cdef enum:
    JOB_SIZE = 4
    UNIQUE_SIZE = 12                     # unique part of a TaskID / ActorID
    TASK_SIZE = 16
    ACTOR_SIZE = 16
    OBJECT_SIZE = 20
    NODE_SIZE = 16
    WORKER_SIZE = 16
    FUNCTION_SIZE = 20

# Domain tags of hash96, one per derivation (arbitrary distinct constants).
cdef enum:
    TAG_DRIVER = 0x44524956              # "DRIV"
    TAG_CHILD = 0x4348494c               # "CHIL"
    TAG_ACTOR = 0x4143544f               # "ACTO"
    TAG_ACTOR_TASK = 0x41435454          # "ACTT"

cdef uint32_t PUT_BIT = 0x80000000U
cdef uint32_t MAX_INDEX = 0x7FFFFFFFU


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    # splitmix64's finalizer: a bijection with full avalanche.
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef void hash96(uint64_t tag, const unsigned char* data, Py_ssize_t n,
                 uint64_t counter, unsigned char* out) noexcept nogil:
    cdef uint64_t a = _mix64(tag ^ 0x9e3779b97f4a7c15ULL)
    cdef uint64_t b = _mix64(tag + 0xd6e8feb86659fd93ULL + <uint64_t>n)
    cdef uint64_t w
    cdef Py_ssize_t i = 0, j, k
    while i < n:
        w = 0
        k = n - i
        if k > 8:
            k = 8
        for j in range(k):
            w |= (<uint64_t>data[i + j]) << (8 * j)
        a = _mix64(a ^ w)
        b = _mix64(b + w + (a >> 1))
        i += 8
    # Second round: fold in the counter and let the lanes mix each other.
    a = _mix64(a ^ counter)
    b = _mix64(b ^ _mix64(counter + 0x632be59bd9b4e019ULL) ^ a)
    a = _mix64(a + b)
    for j in range(8):
        out[j] = <unsigned char>(a >> (8 * j))
    for j in range(4):
        out[8 + j] = <unsigned char>(b >> (8 * j))


cdef inline void _put_u32le(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>v
    p[1] = <unsigned char>(v >> 8)
    p[2] = <unsigned char>(v >> 16)
    p[3] = <unsigned char>(v >> 24)


cdef inline uint32_t _get_u32le(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline BaseID _wrap(type cls, bytes b):
    # Build an id without going through __init__ (the size is known to be right).
    cdef BaseID obj = <BaseID>cls.__new__(cls)
    obj._b = b
    return obj


cdef bytes _as_bytes(object data):
    if PyBytes_CheckExact(data):
        return <bytes>data
    if isinstance(data, (bytearray, memoryview, bytes)):
        return bytes(data)
    raise TypeError(f"expected bytes, got {type(data).__name__}")


cdef bytes _derive(uint64_t tag, bytes data, uint64_t counter, bytes job):
    # 12 hashed bytes + the 4-byte job id.
    cdef unsigned char buf[TASK_SIZE]
    hash96(tag, <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
           counter, buf)
    memcpy(buf + UNIQUE_SIZE, PyBytes_AS_STRING(job), JOB_SIZE)
    return PyBytes_FromStringAndSize(<char*>buf, TASK_SIZE)


cdef uint64_t _counter(object value, str what) except? 0:
    if value < 0 or value > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{what} must be in [0, 2**64), got {value!r}")
    return <uint64_t>value


cdef class BaseID:
    """Base of every id class: a fixed-size immutable byte string."""

    SIZE = 0

    def __init__(self, id_bytes):
        cdef bytes b = _as_bytes(id_bytes)
        if PyBytes_GET_SIZE(b) != self._size():
            raise ValueError(
                f"{type(self).__name__} needs exactly {self._size()} bytes, "
                f"got {PyBytes_GET_SIZE(b)}")
        self._b = b

    cdef Py_ssize_t _size(self):
        return 0

    def binary(self):
        """The id's bytes."""
        return self._b

    def __bytes__(self):
        return self._b

    def hex(self):
        """The id's bytes as lowercase hex."""
        return self._b.hex()

    @classmethod
    def from_hex(cls, s):
        """Parse ``hex()`` output; ValueError if it is not hex of the right size."""
        try:
            b = bytes.fromhex(s)
        except (TypeError, ValueError):
            raise ValueError(f"{cls.__name__}.from_hex: not a hex string: {s!r}") from None
        return cls(b)

    @classmethod
    def from_binary(cls, b):
        """Same as the constructor."""
        return cls(b)

    @classmethod
    def from_random(cls):
        """A fresh id from os.urandom (fork-safe)."""
        return _wrap(cls, os.urandom(cls.SIZE))

    @classmethod
    def nil(cls):
        """The nil id: all 0xFF bytes."""
        return _wrap(cls, b"\xff" * cls.SIZE)

    def is_nil(self):
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(self._b)
        cdef Py_ssize_t i
        for i in range(PyBytes_GET_SIZE(self._b)):
            if p[i] != 0xFF:
                return False
        return True

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._b == (<BaseID>other)._b

    def __ne__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._b != (<BaseID>other)._b

    def __hash__(self):
        return hash(self._b)

    def __repr__(self):
        return f"{type(self).__name__}({self._b.hex()})"

    def __reduce__(self):
        return (type(self), (self._b,))


cdef class JobID(BaseID):
    """A job: 4 bytes."""

    SIZE = JOB_SIZE

    cdef Py_ssize_t _size(self):
        return JOB_SIZE

    @classmethod
    def from_int(cls, value):
        """JobID of a job number (little-endian uint32)."""
        if value < 0 or value > 0xFFFFFFFF:
            raise ValueError(f"JobID.from_int needs 0 <= value < 2**32, got {value!r}")
        cdef unsigned char buf[JOB_SIZE]
        _put_u32le(buf, <uint32_t>value)
        return _wrap(cls, PyBytes_FromStringAndSize(<char*>buf, JOB_SIZE))

    def to_int(self):
        """Inverse of from_int."""
        return _get_u32le(<const unsigned char*>PyBytes_AS_STRING(self._b))


cdef class TaskID(BaseID):
    """A task: 12 unique bytes + the JobID."""

    SIZE = TASK_SIZE

    cdef Py_ssize_t _size(self):
        return TASK_SIZE

    def job_id(self):
        return _wrap(JobID, self._b[UNIQUE_SIZE:])

    @classmethod
    def for_driver(cls, JobID job_id not None):
        """The (deterministic) id of the driver's pseudo-task of a job."""
        return _wrap(cls, _derive(TAG_DRIVER, job_id._b, 0, job_id._b))

    @classmethod
    def for_child(cls, TaskID parent_task_id not None, counter):
        """The id of the ``counter``-th task submitted by ``parent_task_id``.

        Deterministic: a re-executed parent submits children with the same ids.
        """
        cdef bytes pb = parent_task_id._b
        return _wrap(cls, _derive(TAG_CHILD, pb, _counter(counter, "counter"),
                                  pb[UNIQUE_SIZE:]))

    @classmethod
    def for_actor_creation(cls, ActorID actor_id not None):
        """The id of the task that creates ``actor_id``: the actor id's bytes."""
        return _wrap(cls, actor_id._b)

    @classmethod
    def for_actor_task(cls, ActorID actor_id not None, caller, seq):
        """The id of method call number ``seq`` of ``caller`` on ``actor_id``.

        ``caller`` is the calling task's or worker's id (an id or its bytes).
        """
        cdef bytes cb = (<BaseID>caller)._b if isinstance(caller, BaseID) else _as_bytes(caller)
        cdef bytes ab = actor_id._b
        return _wrap(cls, _derive(TAG_ACTOR_TASK, ab + cb, _counter(seq, "seq"),
                                  ab[UNIQUE_SIZE:]))


cdef class ActorID(BaseID):
    """An actor: 12 unique bytes + the JobID."""

    SIZE = ACTOR_SIZE

    cdef Py_ssize_t _size(self):
        return ACTOR_SIZE

    def job_id(self):
        return _wrap(JobID, self._b[UNIQUE_SIZE:])

    @classmethod
    def of(cls, JobID job_id not None, TaskID parent_task_id not None, counter):
        """The id of the ``counter``-th actor created by ``parent_task_id``."""
        return _wrap(cls, _derive(TAG_ACTOR, parent_task_id._b,
                                  _counter(counter, "counter"), job_id._b))


cdef class ObjectID(BaseID):
    """An object: its creating TaskID + a little-endian uint32 index."""

    SIZE = OBJECT_SIZE

    cdef Py_ssize_t _size(self):
        return OBJECT_SIZE

    @classmethod
    def for_return(cls, TaskID task_id not None, index):
        """Return value number ``index`` (1..2**31-1) of ``task_id``."""
        if index < 1 or index > MAX_INDEX:
            raise ValueError(f"return index must be in [1, 2**31), got {index!r}")
        return _wrap(cls, _object_bytes(task_id._b, <uint32_t>index))

    @classmethod
    def for_put(cls, TaskID task_id not None, put_index):
        """Object number ``put_index`` (1..2**31-1) that ``task_id`` put."""
        if put_index < 1 or put_index > MAX_INDEX:
            raise ValueError(f"put index must be in [1, 2**31), got {put_index!r}")
        return _wrap(cls, _object_bytes(task_id._b, (<uint32_t>put_index) | PUT_BIT))

    def task_id(self):
        return _wrap(TaskID, self._b[:TASK_SIZE])

    def index(self):
        """The return or put index, without the put bit."""
        return _get_u32le(<const unsigned char*>PyBytes_AS_STRING(self._b) + TASK_SIZE) & MAX_INDEX

    def is_put(self):
        return (_get_u32le(<const unsigned char*>PyBytes_AS_STRING(self._b) + TASK_SIZE)
                & PUT_BIT) != 0


cdef bytes _object_bytes(bytes task_id, uint32_t index):
    cdef unsigned char buf[OBJECT_SIZE]
    memcpy(buf, PyBytes_AS_STRING(task_id), TASK_SIZE)
    _put_u32le(buf + TASK_SIZE, index)
    return PyBytes_FromStringAndSize(<char*>buf, OBJECT_SIZE)


cdef class NodeID(BaseID):
    """A node (raylet): 16 random bytes."""

    SIZE = NODE_SIZE

    cdef Py_ssize_t _size(self):
        return NODE_SIZE


cdef class WorkerID(BaseID):
    """A worker process: 16 random bytes."""

    SIZE = WORKER_SIZE

    cdef Py_ssize_t _size(self):
        return WORKER_SIZE


cdef class FunctionID(BaseID):
    """A remote function or actor class: sha1 of its pickled bytes."""

    SIZE = FUNCTION_SIZE

    cdef Py_ssize_t _size(self):
        return FUNCTION_SIZE

    @classmethod
    def from_bytes_hash(cls, data):
        """sha1(data)."""
        return _wrap(cls, hashlib.sha1(data).digest())
