# cython: language_level=3
"""The task spec and the binary message codec of a node's Unix socket.

Processes of one node (driver, workers, raylet) talk over a Unix domain socket
in length-prefixed frames whose messages are plain Python data -- None, bools,
ints, floats, bytes, strs, lists, tuples, dicts -- and ``TaskSpec``s, encoded
by ``dumps`` / decoded by ``loads``. Nothing here ever executes code while
decoding (no pickle): every malformed, truncated or random input makes
``loads`` raise ``rayx.exceptions.CodecError`` saying what is wrong and where.

WIRE FORMAT
===========

A value is one tag byte, then a payload::

    tag   meaning     payload
    0x00  None        -
    0x01  False       -
    0x02  True        -
    0x03  int         zigzag varint (signed 64-bit only)
    0x04  float       8 bytes, IEEE 754 binary64, little-endian
    0x05  bytes       varint length, raw bytes
    0x06  str         varint length, UTF-8 (lone surrogates as 'surrogatepass')
    0x07  list        varint count, count values
    0x08  tuple       varint count, count values
    0x09  dict        varint count, count (key value) pairs
    0x0A  TaskSpec    version byte (2), then the fields below
    0x80+n  small int n, for 0 <= n < 128 (the payload is the tag itself)

A varint is unsigned LEB128 (7 bits per byte, low group first, high bit set on
every byte but the last, at most 10 bytes, value < 2**64); a zigzag varint maps
a signed n to (n << 1) ^ (n >> 63) first so that small negatives stay short.

A TaskSpec's fields follow in this fixed order, without tags ("uv" unsigned
varint, "sv" zigzag varint, "b" varint length + bytes, "s" varint length +
UTF-8)::

    task_type uv, task_id b, job_id b, parent_task_id b, caller_id b,
    function_id b, function_name s, method_name s,
    args: uv count, then per arg (kind uv, keyword s, data b),
    nested_refs: uv count, then b each,
    num_returns sv,
    resources: uv count, then per entry (name s, amount 8-byte float),
    max_retries sv,
    flags: one byte, bit 0 retry_exceptions, 1 strategy_soft, 2 detached,
           3 is_asyncio (the other bits must be 0),
    attempt sv, actor_id b, sequence_number sv, strategy uv,
    strategy_node_id b, max_restarts sv, max_task_retries sv,
    max_concurrency sv, actor_name s, namespace s,
    extra: one tagged value, which must be a dict.

A spec with two small inline args encodes to about 150 bytes. The fields change
under a new version byte (version 2 dropped version 1's owner_address and
runtime_env, which nothing used); ``extra`` carries anything meanwhile. Every
process of a node runs the same build, so the decoder accepts only its own
version. tests/test_codec.py pins the format with golden byte strings.

DECODER SAFETY. Every declared length is checked against the bytes left before
anything is allocated (a count of n values needs at least n bytes), nesting is
bounded by MAX_DEPTH containers, a dict key that cannot be hashed is an error,
and ``loads`` rejects bytes left over after the value.

FRAMING. A frame is a 4-byte little-endian length, then ``dumps`` of one
message. ``pack_frames`` writes a burst of messages into one buffer (one
syscall). ``FrameReader.feed`` accepts the stream in chunks of any size; it
decodes frames straight out of the chunk it was given and copies only the
trailing partial frame, so many small frames in one chunk and one big frame in
many chunks both cost linear time.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_Check
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_AsEncodedString, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from rayx.exceptions import CodecError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*)      # NULL + exception on failure
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1
    double PyFloat_AsDouble(object) except? -1.0
    bint PyMemoryView_Check(object)
    void PyErr_Clear()


# ---------------------------------------------------------------------------
# Constants

NORMAL_TASK = 0
ACTOR_CREATION_TASK = 1
ACTOR_TASK = 2

ARG_VALUE = 0
ARG_REF = 1

STRATEGY_DEFAULT = 0
STRATEGY_SPREAD = 1
STRATEGY_NODE_AFFINITY = 2

cdef enum:
    T_NONE = 0x00
    T_FALSE = 0x01
    T_TRUE = 0x02
    T_INT = 0x03
    T_FLOAT = 0x04
    T_BYTES = 0x05
    T_STR = 0x06
    T_LIST = 0x07
    T_TUPLE = 0x08
    T_DICT = 0x09
    T_SPEC = 0x0A
    T_FIXINT = 0x80                      # 0x80 + n for 0 <= n < 128

    SPEC_VERSION = 2
    MAX_TASK_TYPE = 2
    MAX_STRATEGY = 2
    MAX_ARG_KIND = 1

    F_RETRY_EXCEPTIONS = 1               # TaskSpec flag bits
    F_STRATEGY_SOFT = 2
    F_DETACHED = 4
    F_IS_ASYNCIO = 8
    F_ALL = 15

    SMALL_BUF = 512                      # encoder's on-stack buffer

MAX_DEPTH = 100                          # containers nested inside each other
cdef int _max_depth = 100

_TAG_NAMES = {T_LIST: "list", T_TUPLE: "tuple", T_DICT: "dict"}


# ---------------------------------------------------------------------------
# Encoder: a growable byte buffer that starts on the stack.

cdef struct WBuf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap
    char small[SMALL_BUF]


cdef inline void wb_init(WBuf* w) noexcept:
    w.data = &w.small[0]
    w.len = 0
    w.cap = SMALL_BUF


cdef inline void wb_free(WBuf* w) noexcept:
    if w.data != &w.small[0]:
        PyMem_Free(w.data)
    w.data = &w.small[0]


cdef int _grow(WBuf* w, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = w.len + extra
    cdef Py_ssize_t cap = w.cap * 2
    cdef char* p
    if cap < need:
        cap = need
    if w.data == &w.small[0]:
        p = <char*>PyMem_Malloc(cap)
        if p == NULL:
            raise MemoryError()
        memcpy(p, w.data, w.len)
    else:
        p = <char*>PyMem_Realloc(w.data, cap)
        if p == NULL:
            raise MemoryError()
    w.data = p
    w.cap = cap
    return 0


cdef inline int _reserve(WBuf* w, Py_ssize_t extra) except -1:
    if w.len + extra > w.cap:
        return _grow(w, extra)
    return 0


cdef inline int w_byte(WBuf* w, unsigned char b) except -1:
    _reserve(w, 1)
    w.data[w.len] = <char>b
    w.len += 1
    return 0


cdef inline int w_uvarint(WBuf* w, uint64_t v) except -1:
    _reserve(w, 10)
    cdef unsigned char* p = <unsigned char*>w.data + w.len
    cdef Py_ssize_t i = 0
    while v >= 0x80:
        p[i] = <unsigned char>(v | 0x80)
        v >>= 7
        i += 1
    p[i] = <unsigned char>v
    w.len += i + 1
    return 0


cdef inline int w_svarint(WBuf* w, int64_t v) except -1:
    return w_uvarint(w, (<uint64_t>v << 1) ^ <uint64_t>(v >> 63))


cdef inline int w_raw(WBuf* w, const char* p, Py_ssize_t n) except -1:
    _reserve(w, n)
    memcpy(w.data + w.len, p, n)
    w.len += n
    return 0


cdef inline int w_double(WBuf* w, double d) except -1:
    cdef uint64_t u
    cdef int i
    memcpy(&u, &d, 8)
    _reserve(w, 8)
    for i in range(8):
        w.data[w.len + i] = <char>(u >> (8 * i))
    w.len += 8
    return 0


cdef int w_bytes(WBuf* w, object obj) except -1:
    # varint length + raw bytes of a bytes-like object.
    cdef Py_buffer view
    if PyBytes_CheckExact(obj):
        w_uvarint(w, <uint64_t>PyBytes_GET_SIZE(obj))
        return w_raw(w, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    if PyMemoryView_Check(obj) and not obj.contiguous:
        obj = obj.tobytes()
    PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE)
    try:
        w_uvarint(w, <uint64_t>view.len)
        w_raw(w, <const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int w_str(WBuf* w, object s) except -1:
    # varint length + UTF-8 of a str (surrogates via 'surrogatepass').
    cdef Py_ssize_t n
    cdef const char* p = PyUnicode_AsUTF8AndSize(s, &n)
    if p == NULL:
        PyErr_Clear()
        b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass")
        w_uvarint(w, <uint64_t>PyBytes_GET_SIZE(b))
        return w_raw(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
    w_uvarint(w, <uint64_t>n)
    return w_raw(w, p, n)


cdef str _short_repr(object obj):
    r = repr(obj)
    if len(r) > 60:
        r = r[:40] + "..." + r[len(r) - 12:]
    return r


cdef int w_int(WBuf* w, object obj) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(obj, &overflow)
    if overflow:
        raise CodecError(f"int out of the signed 64-bit range the codec carries: {_short_repr(obj)}")
    if 0 <= v < 128:
        return w_byte(w, <unsigned char>(T_FIXINT + v))
    w_byte(w, T_INT)
    return w_svarint(w, v)


cdef int _too_deep() except -1:
    raise CodecError(f"nesting deeper than {_max_depth} containers")


cdef int enc(WBuf* w, object obj, int depth) except -1:
    cdef type t = type(obj)
    if obj is None:
        return w_byte(w, T_NONE)
    if obj is True:
        return w_byte(w, T_TRUE)
    if obj is False:
        return w_byte(w, T_FALSE)
    if t is int:
        return w_int(w, obj)
    if t is str:
        w_byte(w, T_STR)
        return w_str(w, obj)
    if t is bytes:
        w_byte(w, T_BYTES)
        return w_bytes(w, obj)
    if t is float:
        w_byte(w, T_FLOAT)
        return w_double(w, <double>obj)
    if t is tuple or t is list:
        return enc_seq(w, obj, T_TUPLE if t is tuple else T_LIST, depth)
    if t is dict:
        return enc_dict(w, <dict>obj, depth)
    if t is TaskSpec:
        return enc_spec(w, <TaskSpec>obj, depth)
    # Subclasses of the supported types travel as the base type.
    if isinstance(obj, int):
        return w_int(w, obj)
    if isinstance(obj, float):
        w_byte(w, T_FLOAT)
        return w_double(w, PyFloat_AsDouble(obj))
    if isinstance(obj, str):
        w_byte(w, T_STR)
        return w_str(w, obj)
    if isinstance(obj, bytes) or PyByteArray_Check(obj) or PyMemoryView_Check(obj):
        w_byte(w, T_BYTES)
        return w_bytes(w, obj)
    if isinstance(obj, tuple):
        return enc_seq(w, obj, T_TUPLE, depth)
    if isinstance(obj, list):
        return enc_seq(w, obj, T_LIST, depth)
    if isinstance(obj, dict):
        return enc_dict(w, obj, depth)
    if isinstance(obj, TaskSpec):
        return enc_spec(w, <TaskSpec>obj, depth)
    raise TypeError(f"rayx codec cannot encode an object of type {t.__name__}")


cdef int enc_seq(WBuf* w, object seq, unsigned char tag, int depth) except -1:
    if depth >= _max_depth:
        _too_deep()
    w_byte(w, tag)
    w_uvarint(w, <uint64_t>len(seq))
    for item in seq:
        enc(w, item, depth + 1)
    return 0


cdef int enc_dict(WBuf* w, dict d, int depth) except -1:
    if depth >= _max_depth:
        _too_deep()
    w_byte(w, T_DICT)
    w_uvarint(w, <uint64_t>len(d))
    for k, v in d.items():
        enc(w, k, depth + 1)
        enc(w, v, depth + 1)
    return 0


cdef inline int w_bytes_field(WBuf* w, object v, str name) except -1:
    if PyBytes_CheckExact(v):
        w_uvarint(w, <uint64_t>PyBytes_GET_SIZE(v))
        return w_raw(w, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
    if v is None:
        raise TypeError(f"TaskSpec.{name} must be bytes, not None")
    return w_bytes(w, v)


cdef inline int w_str_field(WBuf* w, object v, str name) except -1:
    if not isinstance(v, str):
        raise TypeError(f"TaskSpec.{name} must be str, not {type(v).__name__}")
    return w_str(w, v)


cdef int enc_spec(WBuf* w, TaskSpec s, int depth) except -1:
    cdef unsigned char flags = 0
    cdef object kind
    if not 0 <= s.task_type <= MAX_TASK_TYPE:
        raise ValueError(f"TaskSpec.task_type must be 0, 1 or 2, got {s.task_type}")
    if not 0 <= s.strategy <= MAX_STRATEGY:
        raise ValueError(f"TaskSpec.strategy must be 0, 1 or 2, got {s.strategy}")
    if s.args is None or s.nested_refs is None or s.resources is None or s.extra is None:
        raise TypeError("TaskSpec.args, nested_refs, resources and extra must not be None")
    w_byte(w, T_SPEC)
    w_byte(w, SPEC_VERSION)
    w_uvarint(w, <uint64_t>s.task_type)
    w_bytes_field(w, s.task_id, "task_id")
    w_bytes_field(w, s.job_id, "job_id")
    w_bytes_field(w, s.parent_task_id, "parent_task_id")
    w_bytes_field(w, s.caller_id, "caller_id")
    w_bytes_field(w, s.function_id, "function_id")
    w_str_field(w, s.function_name, "function_name")
    w_str_field(w, s.method_name, "method_name")

    w_uvarint(w, <uint64_t>len(s.args))
    for a in s.args:
        if not isinstance(a, (tuple, list)) or len(a) != 3:
            raise TypeError(f"TaskSpec.args items must be (kind, keyword, data) tuples, got {_short_repr(a)}")
        kind = a[0]
        if not (kind == 0 or kind == 1):
            raise ValueError(f"TaskSpec arg kind must be ARG_VALUE (0) or ARG_REF (1), got {_short_repr(kind)}")
        w_uvarint(w, 1 if kind else 0)
        w_str_field(w, a[1], "args keyword")
        w_bytes_field(w, a[2], "args data")

    w_uvarint(w, <uint64_t>len(s.nested_refs))
    for r in s.nested_refs:
        w_bytes_field(w, r, "nested_refs item")

    w_svarint(w, s.num_returns)

    w_uvarint(w, <uint64_t>len(s.resources))
    for name, amount in s.resources.items():
        w_str_field(w, name, "resources key")
        w_double(w, PyFloat_AsDouble(amount))

    w_svarint(w, s.max_retries)
    if s.retry_exceptions:
        flags |= F_RETRY_EXCEPTIONS
    if s.strategy_soft:
        flags |= F_STRATEGY_SOFT
    if s.detached:
        flags |= F_DETACHED
    if s.is_asyncio:
        flags |= F_IS_ASYNCIO
    w_byte(w, flags)
    w_svarint(w, s.attempt)
    w_bytes_field(w, s.actor_id, "actor_id")
    w_svarint(w, s.sequence_number)
    w_uvarint(w, <uint64_t>s.strategy)
    w_bytes_field(w, s.strategy_node_id, "strategy_node_id")
    w_svarint(w, s.max_restarts)
    w_svarint(w, s.max_task_retries)
    w_svarint(w, s.max_concurrency)
    w_str_field(w, s.actor_name, "actor_name")
    w_str_field(w, s.namespace, "namespace")
    enc_dict(w, s.extra, depth)
    return 0


cdef inline bytes wb_to_bytes(WBuf* w):
    return PyBytes_FromStringAndSize(w.data, w.len)


cpdef bytes dumps(object obj):
    """Encode one message (see the module docstring for what it may contain)."""
    cdef WBuf w
    wb_init(&w)
    try:
        enc(&w, obj, 0)
        return wb_to_bytes(&w)
    finally:
        wb_free(&w)


# ---------------------------------------------------------------------------
# Decoder: a cursor over a borrowed buffer.

cdef struct RBuf:
    const unsigned char* p
    Py_ssize_t pos
    Py_ssize_t end


cdef int _truncated(RBuf* r, Py_ssize_t need, const char* what) except -1:
    raise CodecError(
        f"truncated input: {what.decode()} needs {need} byte(s) at offset {r.pos}, "
        f"only {r.end - r.pos} left")


cdef inline int r_byte(RBuf* r, const char* what) except -1:
    if r.pos >= r.end:
        _truncated(r, 1, what)
    r.pos += 1
    return r.p[r.pos - 1]


cdef int r_uvarint(RBuf* r, uint64_t* out, const char* what) except -1:
    cdef uint64_t result = 0
    cdef unsigned int shift = 0
    cdef unsigned char b
    cdef Py_ssize_t start = r.pos
    while True:
        if r.pos >= r.end:
            _truncated(r, 1, what)
        b = r.p[r.pos]
        r.pos += 1
        if shift == 63 and b > 1:
            raise CodecError(f"varint ({what.decode()}) at offset {start} overflows 64 bits")
        result |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            break
        shift += 7
    out[0] = result
    return 0


cdef inline int64_t r_svarint(RBuf* r, const char* what) except? -1:
    cdef uint64_t u
    r_uvarint(r, &u, what)
    return <int64_t>((u >> 1) ^ (~(u & 1) + 1))


cdef Py_ssize_t r_count(RBuf* r, Py_ssize_t min_item, const char* what) except -1:
    # A length or count, checked against the bytes left (each item takes >= min_item).
    cdef uint64_t n
    cdef Py_ssize_t start = r.pos
    r_uvarint(r, &n, what)
    if n > <uint64_t>((r.end - r.pos) // min_item):
        raise CodecError(
            f"declared {what.decode()} {n} at offset {start} exceeds the "
            f"{r.end - r.pos} byte(s) left")
    return <Py_ssize_t>n


cdef inline bytes r_bytes(RBuf* r, const char* what):
    cdef Py_ssize_t n = r_count(r, 1, what)
    r.pos += n
    return PyBytes_FromStringAndSize(<const char*>r.p + r.pos - n, n)


cdef str r_str(RBuf* r, const char* what):
    cdef Py_ssize_t n = r_count(r, 1, what)
    cdef Py_ssize_t start = r.pos
    r.pos += n
    try:
        return PyUnicode_DecodeUTF8(<const char*>r.p + start, n, "surrogatepass")
    except UnicodeDecodeError as e:
        raise CodecError(f"invalid UTF-8 in {what.decode()} at offset {start}: {e.reason}") from None


cdef double r_double(RBuf* r, const char* what) except? -1.0:
    cdef uint64_t u = 0
    cdef double d
    cdef int i
    if r.end - r.pos < 8:
        _truncated(r, 8, what)
    for i in range(8):
        u |= (<uint64_t>r.p[r.pos + i]) << (8 * i)
    r.pos += 8
    memcpy(&d, &u, 8)
    return d


cdef object dec(RBuf* r, int depth):
    cdef int tag = r_byte(r, "tag")
    cdef Py_ssize_t n, i
    cdef uint64_t u
    if tag >= T_FIXINT:
        return tag - T_FIXINT
    if tag == T_STR:
        return r_str(r, "str length")
    if tag == T_BYTES:
        return r_bytes(r, "bytes length")
    if tag == T_INT:
        return r_svarint(r, "int")
    if tag == T_NONE:
        return None
    if tag == T_TRUE:
        return True
    if tag == T_FALSE:
        return False
    if tag == T_FLOAT:
        return r_double(r, "float")
    if tag == T_LIST or tag == T_TUPLE:
        if depth >= _max_depth:
            _too_deep()
        n = r_count(r, 1, "item count")
        if tag == T_LIST:
            lst = PyList_New(n)
            for i in range(n):
                item = dec(r, depth + 1)
                Py_INCREF(item)
                PyList_SET_ITEM(lst, i, item)
            return lst
        tup = PyTuple_New(n)
        for i in range(n):
            item = dec(r, depth + 1)
            Py_INCREF(item)
            PyTuple_SET_ITEM(tup, i, item)
        return tup
    if tag == T_DICT:
        return dec_dict(r, depth)
    if tag == T_SPEC:
        return dec_spec(r, depth)
    raise CodecError(f"unknown tag 0x{tag:02x} at offset {r.pos - 1}")


cdef dict dec_dict(RBuf* r, int depth):
    cdef Py_ssize_t n, i
    cdef dict d = {}
    if depth >= _max_depth:
        _too_deep()
    n = r_count(r, 2, "dict size")
    for i in range(n):
        k = dec(r, depth + 1)
        v = dec(r, depth + 1)
        try:
            d[k] = v
        except TypeError:
            raise CodecError(f"dict key of type {type(k).__name__} is not hashable "
                             f"(before offset {r.pos})") from None
    return d


cdef TaskSpec dec_spec(RBuf* r, int depth):
    cdef uint64_t u
    cdef Py_ssize_t n, i
    cdef int flags
    cdef TaskSpec s = TaskSpec.__new__(TaskSpec)
    cdef Py_ssize_t start = r.pos
    if r_byte(r, "TaskSpec version") != SPEC_VERSION:
        raise CodecError(f"unsupported TaskSpec version {r.p[start]} at offset {start}")
    r_uvarint(r, &u, "task_type")
    if u > MAX_TASK_TYPE:
        raise CodecError(f"bad TaskSpec.task_type {u} before offset {r.pos}")
    s.task_type = <int>u
    s.task_id = r_bytes(r, "task_id length")
    s.job_id = r_bytes(r, "job_id length")
    s.parent_task_id = r_bytes(r, "parent_task_id length")
    s.caller_id = r_bytes(r, "caller_id length")
    s.function_id = r_bytes(r, "function_id length")
    s.function_name = r_str(r, "function_name length")
    s.method_name = r_str(r, "method_name length")

    n = r_count(r, 3, "arg count")
    args = PyList_New(n)
    for i in range(n):
        r_uvarint(r, &u, "arg kind")
        if u > MAX_ARG_KIND:
            raise CodecError(f"bad TaskSpec arg kind {u} before offset {r.pos}")
        kw = r_str(r, "arg keyword length")
        data = r_bytes(r, "arg data length")
        item = (1 if u else 0, kw, data)
        Py_INCREF(item)
        PyList_SET_ITEM(args, i, item)
    s.args = args

    n = r_count(r, 1, "nested_refs count")
    refs = PyList_New(n)
    for i in range(n):
        item = r_bytes(r, "nested ref length")
        Py_INCREF(item)
        PyList_SET_ITEM(refs, i, item)
    s.nested_refs = refs

    s.num_returns = r_svarint(r, "num_returns")

    n = r_count(r, 9, "resources count")
    res = {}
    for i in range(n):
        name = r_str(r, "resource name length")
        res[name] = r_double(r, "resource amount")
    s.resources = res

    s.max_retries = r_svarint(r, "max_retries")
    flags = r_byte(r, "flags")
    if flags & ~F_ALL:
        raise CodecError(f"unknown TaskSpec flag bits 0x{flags:02x} at offset {r.pos - 1}")
    s.retry_exceptions = (flags & F_RETRY_EXCEPTIONS) != 0
    s.strategy_soft = (flags & F_STRATEGY_SOFT) != 0
    s.detached = (flags & F_DETACHED) != 0
    s.is_asyncio = (flags & F_IS_ASYNCIO) != 0
    s.attempt = r_svarint(r, "attempt")
    s.actor_id = r_bytes(r, "actor_id length")
    s.sequence_number = r_svarint(r, "sequence_number")
    r_uvarint(r, &u, "strategy")
    if u > MAX_STRATEGY:
        raise CodecError(f"bad TaskSpec.strategy {u} before offset {r.pos}")
    s.strategy = <int>u
    s.strategy_node_id = r_bytes(r, "strategy_node_id length")
    s.max_restarts = r_svarint(r, "max_restarts")
    s.max_task_retries = r_svarint(r, "max_task_retries")
    s.max_concurrency = r_svarint(r, "max_concurrency")
    s.actor_name = r_str(r, "actor_name length")
    s.namespace = r_str(r, "namespace length")
    start = r.pos
    if r_byte(r, "extra tag") != T_DICT:
        raise CodecError(f"TaskSpec.extra at offset {start} is not a dict")
    s.extra = dec_dict(r, depth)
    return s


cdef object _decode_all(const unsigned char* p, Py_ssize_t n):
    cdef RBuf r
    r.p = p
    r.pos = 0
    r.end = n
    if n == 0:
        raise CodecError("empty input")
    obj = dec(&r, 0)
    if r.pos != r.end:
        raise CodecError(f"{r.end - r.pos} trailing byte(s) after the value at offset {r.pos}")
    return obj


cdef int _get_buffer(object data, Py_buffer* view) except -1:
    if PyMemoryView_Check(data) and not data.contiguous:
        data = data.tobytes()
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    return 0


cpdef object loads(object data):
    """Decode one message from bytes, bytearray or memoryview; CodecError if malformed."""
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        return _decode_all(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    _get_buffer(data, &view)
    try:
        return _decode_all(<const unsigned char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def loads_from(data, Py_ssize_t offset=0):
    """Decode the one value starting at ``offset``; returns ``(value, end_offset)``.

    Bytes after the value are left alone (the caller parses on from end_offset).
    """
    cdef Py_buffer view
    cdef RBuf r
    _get_buffer(data, &view)
    try:
        if offset < 0 or offset > view.len:
            raise CodecError(f"offset {offset} outside the {view.len}-byte buffer")
        r.p = <const unsigned char*>view.buf
        r.pos = offset
        r.end = view.len
        obj = dec(&r, 0)
        return obj, r.pos
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------------------
# TaskSpec

def _taskspec_from_bytes(data):
    """Unpickling helper: TaskSpec.decode."""
    return TaskSpec.decode(data)


_ID_FIELDS = frozenset(["task_id", "job_id", "parent_task_id", "caller_id", "function_id",
                        "actor_id", "strategy_node_id"])

FIELD_NAMES = (
    "task_type", "task_id", "job_id", "parent_task_id", "caller_id", "function_id",
    "function_name", "method_name", "args", "nested_refs", "num_returns", "resources",
    "max_retries", "retry_exceptions", "attempt", "actor_id", "sequence_number",
    "strategy", "strategy_node_id", "strategy_soft", "max_restarts", "max_task_retries",
    "max_concurrency", "actor_name", "namespace", "detached", "is_asyncio", "extra",
)


cdef class TaskSpec:
    """Everything a raylet and a worker need to know to run one task.

    All fields are public attributes; see codec.pxd for their types and the
    module docstring for the wire format. Construct with keyword arguments.
    """

    def __init__(self, *, int task_type=0, bytes task_id not None=b"",
                 bytes job_id not None=b"", bytes parent_task_id not None=b"",
                 bytes caller_id not None=b"", bytes function_id not None=b"",
                 str function_name not None="", str method_name not None="",
                 list args=None, list nested_refs=None, long long num_returns=1,
                 dict resources=None, long long max_retries=3, bint retry_exceptions=False,
                 long long attempt=0, bytes actor_id not None=b"",
                 long long sequence_number=0, int strategy=0,
                 bytes strategy_node_id not None=b"", bint strategy_soft=False,
                 long long max_restarts=0, long long max_task_retries=0,
                 long long max_concurrency=1, str actor_name not None="",
                 str namespace not None="", bint detached=False, bint is_asyncio=False,
                 dict extra=None):
        self.task_type = task_type
        self.task_id = task_id
        self.job_id = job_id
        self.parent_task_id = parent_task_id
        self.caller_id = caller_id
        self.function_id = function_id
        self.function_name = function_name
        self.method_name = method_name
        self.args = [] if args is None else args
        self.nested_refs = [] if nested_refs is None else nested_refs
        self.num_returns = num_returns
        self.resources = {} if resources is None else resources
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.attempt = attempt
        self.actor_id = actor_id
        self.sequence_number = sequence_number
        self.strategy = strategy
        self.strategy_node_id = strategy_node_id
        self.strategy_soft = strategy_soft
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.max_concurrency = max_concurrency
        self.actor_name = actor_name
        self.namespace = namespace
        self.detached = detached
        self.is_asyncio = is_asyncio
        self.extra = {} if extra is None else extra

    cpdef bytes encode(self):
        """The spec's wire bytes; equal to ``dumps(self)``."""
        cdef WBuf w
        wb_init(&w)
        try:
            enc_spec(&w, self, 0)
            return wb_to_bytes(&w)
        finally:
            wb_free(&w)

    @staticmethod
    def decode(data):
        """Decode ``encode()`` output (bytes, bytearray or memoryview)."""
        obj = loads(data)
        if type(obj) is not TaskSpec:
            raise CodecError(f"expected an encoded TaskSpec, got a {type(obj).__name__}")
        return obj

    cpdef list return_ids(self):
        """The 20-byte ids of the return objects: task_id + uint32le(i), i in 1..num_returns."""
        cdef bytes tid = self.task_id
        cdef char buf[20]
        cdef long long i
        cdef list out = []
        if tid is None or PyBytes_GET_SIZE(tid) != 16:
            raise ValueError(f"TaskSpec.task_id must be 16 bytes to derive return ids, "
                             f"got {None if tid is None else len(tid)}")
        memcpy(buf, PyBytes_AS_STRING(tid), 16)
        for i in range(1, self.num_returns + 1):
            buf[16] = <char>(i & 0xFF)
            buf[17] = <char>((i >> 8) & 0xFF)
            buf[18] = <char>((i >> 16) & 0xFF)
            buf[19] = <char>((i >> 24) & 0xFF)
            out.append(PyBytes_FromStringAndSize(buf, 20))
        return out

    cpdef list arg_refs(self):
        """The object ids of the ARG_REF args, in order."""
        cdef list out = []
        for a in self.args:
            if a[0] == ARG_REF:
                out.append(a[2])
        return out

    cpdef str actor_class_name(self):
        """The class name of an actor, from its creation task's name ("Counter.__init__",
        as Ray names it) or one of its calls' ("Counter.inc")."""
        return self.function_name.rpartition(".")[0]

    cpdef bint retries_left(self):
        """The retry rule, for every path a task or actor call takes: another attempt
        is allowed while ``attempt`` is below ``max_retries`` (negative: no limit)."""
        return self.max_retries < 0 or self.attempt < self.max_retries

    cpdef bint take_retry(self):
        """Count one more attempt if the retry rule allows it; True if it did."""
        if self.max_retries < 0 or self.attempt < self.max_retries:
            self.attempt += 1
            return True
        return False

    cpdef tuple shape_key(self):
        """Hashable, canonical key of the resource request: sorted (name, float amount)
        pairs, zero amounts left out."""
        cdef dict res = self.resources
        if not res:
            return ()
        items = [(k, float(v)) for k, v in res.items() if v != 0]
        if len(items) > 1:
            items.sort()
        return tuple(items)

    def copy(self):
        """A copy whose args, nested_refs, resources and extra are new containers."""
        cdef TaskSpec c = TaskSpec.__new__(TaskSpec)
        c.task_type = self.task_type
        c.task_id = self.task_id
        c.job_id = self.job_id
        c.parent_task_id = self.parent_task_id
        c.caller_id = self.caller_id
        c.function_id = self.function_id
        c.function_name = self.function_name
        c.method_name = self.method_name
        c.args = list(self.args)
        c.nested_refs = list(self.nested_refs)
        c.num_returns = self.num_returns
        c.resources = dict(self.resources)
        c.max_retries = self.max_retries
        c.retry_exceptions = self.retry_exceptions
        c.attempt = self.attempt
        c.actor_id = self.actor_id
        c.sequence_number = self.sequence_number
        c.strategy = self.strategy
        c.strategy_node_id = self.strategy_node_id
        c.strategy_soft = self.strategy_soft
        c.max_restarts = self.max_restarts
        c.max_task_retries = self.max_task_retries
        c.max_concurrency = self.max_concurrency
        c.actor_name = self.actor_name
        c.namespace = self.namespace
        c.detached = self.detached
        c.is_asyncio = self.is_asyncio
        c.extra = dict(self.extra)
        return c

    cdef tuple _astuple(self):
        return (self.task_type, self.task_id, self.job_id, self.parent_task_id,
                self.caller_id, self.function_id, self.function_name, self.method_name,
                self.args, self.nested_refs, self.num_returns, self.resources,
                self.max_retries, self.retry_exceptions, self.attempt, self.actor_id,
                self.sequence_number, self.strategy, self.strategy_node_id,
                self.strategy_soft, self.max_restarts, self.max_task_retries,
                self.max_concurrency, self.actor_name, self.namespace, self.detached,
                self.is_asyncio, self.extra)

    def __eq__(self, other):
        if not isinstance(other, TaskSpec):
            return NotImplemented
        return self._astuple() == (<TaskSpec>other)._astuple()

    def __ne__(self, other):
        if not isinstance(other, TaskSpec):
            return NotImplemented
        return self._astuple() != (<TaskSpec>other)._astuple()

    def __hash__(self):
        raise TypeError("unhashable type: 'TaskSpec' (it is mutable)")

    def __repr__(self):
        # Every field that differs from its default; ids in hex.
        parts = []
        for name, value, default in zip(FIELD_NAMES, self._astuple(), _DEFAULT_FIELDS):
            if value == default and name != "task_id":
                continue
            if name in _ID_FIELDS and isinstance(value, bytes):
                parts.append(f"{name}={value.hex()}")
            else:
                parts.append(f"{name}={value!r}")
        return "TaskSpec(" + ", ".join(parts) + ")"

    def __reduce__(self):
        return (_taskspec_from_bytes, (self.encode(),))


_DEFAULT_FIELDS = TaskSpec()._astuple()


# ---------------------------------------------------------------------------
# Framing

cdef enum:
    HEADER = 4
    MAX_FRAME = 0xFFFFFFFF


cdef int _frame_into(WBuf* w, object msg) except -1:
    cdef Py_ssize_t start = w.len
    cdef Py_ssize_t n
    _reserve(w, HEADER)
    w.len += HEADER
    enc(w, msg, 0)
    n = w.len - start - HEADER
    if n > <Py_ssize_t>MAX_FRAME:
        raise CodecError(f"message of {n} bytes does not fit a frame (max 2**32-1)")
    cdef unsigned char* p = <unsigned char*>w.data + start
    p[0] = <unsigned char>n
    p[1] = <unsigned char>(n >> 8)
    p[2] = <unsigned char>(n >> 16)
    p[3] = <unsigned char>(n >> 24)
    return 0


def pack_frame(msg):
    """One frame: uint32le length + dumps(msg)."""
    cdef WBuf w
    wb_init(&w)
    try:
        _frame_into(&w, msg)
        return wb_to_bytes(&w)
    finally:
        wb_free(&w)


def pack_frames(msgs):
    """The frames of several messages, concatenated into one buffer."""
    cdef WBuf w
    wb_init(&w)
    try:
        for msg in msgs:
            _frame_into(&w, msg)
        return wb_to_bytes(&w)
    finally:
        wb_free(&w)


cdef class FrameReader:
    """Incremental frame decoder: ``feed(chunk)`` returns the messages completed.

    Keeps the trailing partial frame between calls. A frame longer than
    ``max_frame_size`` or a malformed one raises CodecError, after which the
    reader is unusable (the stream can no longer be trusted to be in sync).
    """

    cdef bytearray _buf                  # trailing partial frame
    cdef Py_ssize_t _need                # len(_buf) needed before parsing can progress
    cdef readonly Py_ssize_t max_frame_size
    cdef object _error                   # the CodecError that broke the reader, or None

    def __init__(self, Py_ssize_t max_frame_size=1 << 30):
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._need = HEADER
        self._error = None

    @property
    def buffered(self):
        """Bytes held of a frame not yet complete."""
        return len(self._buf)

    @property
    def broken(self):
        return self._error is not None

    cdef Py_ssize_t _parse(self, const unsigned char* p, Py_ssize_t n, list out) except -1:
        # Decode every complete frame in p[0:n]; return the bytes consumed.
        cdef Py_ssize_t pos = 0
        cdef uint64_t flen
        cdef RBuf r
        self._need = HEADER
        while n - pos >= HEADER:
            flen = (<uint64_t>p[pos]) | (<uint64_t>p[pos + 1] << 8) | \
                   (<uint64_t>p[pos + 2] << 16) | (<uint64_t>p[pos + 3] << 24)
            if flen > <uint64_t>self.max_frame_size:
                raise CodecError(f"frame of {flen} bytes exceeds max_frame_size {self.max_frame_size}")
            if flen == 0:
                raise CodecError("empty frame")
            if <uint64_t>(n - pos - HEADER) < flen:
                self._need = HEADER + <Py_ssize_t>flen
                break
            r.p = p + pos + HEADER
            r.pos = 0
            r.end = <Py_ssize_t>flen
            out.append(dec(&r, 0))
            if r.pos != r.end:
                raise CodecError(f"{r.end - r.pos} trailing byte(s) inside a {flen}-byte frame")
            pos += HEADER + <Py_ssize_t>flen
        return pos

    def feed(self, data):
        """Add a chunk of the stream; return the list of messages it completed."""
        cdef Py_buffer view
        cdef Py_ssize_t used
        cdef list out = []
        if self._error is not None:
            raise CodecError(f"FrameReader is unusable after an earlier error: {self._error}")
        try:
            if len(self._buf) == 0:
                # Nothing pending: decode straight from the caller's chunk.
                _get_buffer(data, &view)
                try:
                    used = self._parse(<const unsigned char*>view.buf, view.len, out)
                    if used < view.len:
                        self._buf += (<const char*>view.buf + used)[:view.len - used]
                finally:
                    PyBuffer_Release(&view)
            else:
                self._buf += data
                if len(self._buf) < self._need:
                    return out
                _get_buffer(self._buf, &view)
                try:
                    used = self._parse(<const unsigned char*>view.buf, view.len, out)
                finally:
                    PyBuffer_Release(&view)
                if used:
                    del self._buf[:used]
        except CodecError as e:
            self._error = e
            self._buf = bytearray()
            raise
        return out
