# cython: language_level=3, boundscheck=False, wraparound=False
"""The kinds of message fields, as compiled predicates, and ``Validator``: one
message's check, field by field.

``rayx.messages`` names a kind for every field it declares (by its code here,
``KIND_*``); receivers that do not trust their sender check each message
before a handler sees it. That runs on every message a raylet's client socket
or a worker's link takes, so it is compiled: one call per message, typed access
to TaskSpec fields, no allocation. The limits here bound what one message may
make a receiver hold.
"""
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

from rayx._core.codec cimport TaskSpec

MAX_ID_BYTES = 64
MAX_ITEMS = 1 << 20            # ids in one message (REFS of a huge get, WAIT)
MAX_NUM_RETURNS = 10_000       # returns of one task (rayx.options gives users the same limit)
MAX_TEXT = 1 << 16             # characters of a name, a path, a reason
MAX_ENTRIES = 4096             # keys of an info dict
MAX_ARGS = 64                  # arguments of a REQUEST

cdef Py_ssize_t _MAX_ID = MAX_ID_BYTES
cdef Py_ssize_t _MAX_ITEMS = MAX_ITEMS
cdef long long _MAX_RETURNS = MAX_NUM_RETURNS
cdef Py_ssize_t _MAX_TEXT = MAX_TEXT
cdef Py_ssize_t _MAX_ENTRIES = MAX_ENTRIES
cdef Py_ssize_t _MAX_ARGS = MAX_ARGS

# The kinds, by code (rayx.messages maps the names its declarations use to these).
cdef enum Kind:
    K_ID, K_IDS, K_COUNT, K_FLAG, K_TEXT, K_BLOB, K_BLOB_OR_NONE, K_INFO, K_SPEC, K_VALUES, \
        K_RESULTS, K_ARGS, K_ANY

cdef enum:
    _MAX_FIELDS = 8         # fields of one message

KIND_ID, KIND_IDS, KIND_COUNT, KIND_FLAG, KIND_TEXT = K_ID, K_IDS, K_COUNT, K_FLAG, K_TEXT
KIND_BLOB, KIND_BLOB_OR_NONE, KIND_INFO, KIND_SPEC = K_BLOB, K_BLOB_OR_NONE, K_INFO, K_SPEC
KIND_VALUES, KIND_RESULTS, KIND_ARGS, KIND_ANY = K_VALUES, K_RESULTS, K_ARGS, K_ANY
MAX_FIELDS = _MAX_FIELDS


cdef inline bint _id(object value):
    cdef Py_ssize_t n
    if not PyBytes_CheckExact(value):
        return False
    n = PyBytes_GET_SIZE(value)
    return 0 < n <= _MAX_ID


cdef bint _ids(object value):
    cdef Py_ssize_t i, n
    if type(value) is list:
        n = PyList_GET_SIZE(value)
        if n > _MAX_ITEMS:
            return False
        for i in range(n):
            if not _id(<object>PyList_GET_ITEM(value, i)):
                return False
        return True
    if type(value) is tuple:
        n = PyTuple_GET_SIZE(value)
        if n > _MAX_ITEMS:
            return False
        for i in range(n):
            if not _id(<object>PyTuple_GET_ITEM(value, i)):
                return False
        return True
    return False


cdef inline bint _flag(object value):
    return value is True or value is False or (type(value) is int and (value == 0 or value == 1))


cdef bint _is_count(object value):
    return type(value) is int and 0 <= value < (1 << 63)


cdef bint _is_text(object value):
    return type(value) is str and len(<str>value) <= _MAX_TEXT


cdef bint _is_blob(object value):
    return PyBytes_CheckExact(value)


cdef bint _is_blob_or_none(object value):
    return value is None or PyBytes_CheckExact(value)


cdef bint _is_info(object value):
    return type(value) is dict and len(<dict>value) <= _MAX_ENTRIES


cdef bint _is_args(object value):
    return (type(value) is list or type(value) is tuple) and len(value) <= _MAX_ARGS


cdef bint _is_spec(object value):
    """A TaskSpec in the ranges receivers rely on (the codec checked its structure
    and field types when it decoded it)."""
    cdef TaskSpec spec
    if type(value) is not TaskSpec:
        return False
    spec = <TaskSpec>value
    if spec.num_returns < 0 or spec.num_returns > _MAX_RETURNS or spec.attempt < 0 \
            or spec.max_retries < -1:
        return False
    if spec.task_id is None or PyBytes_GET_SIZE(spec.task_id) != 16 \
            or spec.job_id is None or PyBytes_GET_SIZE(spec.job_id) != 4:
        return False
    if spec.actor_id is not None and PyBytes_GET_SIZE(spec.actor_id) not in (0, 16):
        return False
    return spec.nested_refs is None or not spec.nested_refs or _ids(spec.nested_refs)


cdef bint _is_values(object value):
    """{object id: bytes or None}."""
    cdef Py_ssize_t pos = 0
    cdef PyObject *key
    cdef PyObject *item
    if type(value) is not dict:
        return False
    if len(<dict>value) > _MAX_ITEMS:
        return False
    while PyDict_Next(value, &pos, &key, &item):
        if not _id(<object>key) or not (<object>item is None or PyBytes_CheckExact(<object>item)):
            return False
    return True


cdef bint _is_results(object value):
    """[(object id, bytes or None, size >= 0, nested ids, is_error)], at most
    MAX_NUM_RETURNS of them."""
    cdef Py_ssize_t i, n
    cdef object result
    if type(value) is list:
        n = PyList_GET_SIZE(value)
    elif type(value) is tuple:
        n = PyTuple_GET_SIZE(value)
    else:
        return False
    if n > _MAX_RETURNS:
        return False
    for i in range(n):
        result = <object>(PyList_GET_ITEM(value, i) if type(value) is list else PyTuple_GET_ITEM(value, i))
        if type(result) is list:
            result = tuple(result)
        if type(result) is not tuple or PyTuple_GET_SIZE(result) != 5:
            return False
        if not _id(<object>PyTuple_GET_ITEM(result, 0)):
            return False
        data = <object>PyTuple_GET_ITEM(result, 1)
        if data is not None and not PyBytes_CheckExact(data):
            return False
        size = <object>PyTuple_GET_ITEM(result, 2)
        if type(size) is not int or size < 0:
            return False
        nested = <object>PyTuple_GET_ITEM(result, 3)
        if nested and not _ids(nested):
            return False
        if not _flag(<object>PyTuple_GET_ITEM(result, 4)):
            return False
    return True


cdef bint _is_kind(int kind, object value):
    if kind == K_ID:
        return _id(value)
    if kind == K_IDS:
        return _ids(value)
    if kind == K_COUNT:
        return _is_count(value)
    if kind == K_FLAG:
        return _flag(value)
    if kind == K_TEXT:
        return _is_text(value)
    if kind == K_BLOB:
        return PyBytes_CheckExact(value)
    if kind == K_BLOB_OR_NONE:
        return value is None or PyBytes_CheckExact(value)
    if kind == K_INFO:
        return _is_info(value)
    if kind == K_SPEC:
        return _is_spec(value)
    if kind == K_VALUES:
        return _is_values(value)
    if kind == K_RESULTS:
        return _is_results(value)
    if kind == K_ARGS:
        return _is_args(value)
    return kind == K_ANY


def is_kind(int kind, value):
    """Whether ``value`` is of the kind coded ``kind`` (KIND_*)."""
    return _is_kind(kind, value)


cdef class Validator:
    """``validator(message)``: whether a message tuple has between ``required`` and
    ``len(kinds)`` fields after its tag, each of its kind."""

    cdef Py_ssize_t required
    cdef Py_ssize_t total
    cdef int kinds[_MAX_FIELDS]

    def __init__(self, Py_ssize_t required, kinds):
        if len(kinds) > _MAX_FIELDS or not 0 <= required <= len(kinds):
            raise ValueError(f"a message has at most {_MAX_FIELDS} fields, {required} of them required")
        self.required = required
        self.total = len(kinds)
        for i, kind in enumerate(kinds):
            if not K_ID <= kind <= K_ANY:
                raise ValueError(f"no kind has the code {kind!r}")
            self.kinds[i] = kind

    def __call__(self, message):
        cdef Py_ssize_t i, count
        if type(message) is not tuple:
            return False
        count = PyTuple_GET_SIZE(message) - 1
        if count < self.required or count > self.total:
            return False
        for i in range(count):
            if not _is_kind(self.kinds[i], <object>PyTuple_GET_ITEM(message, i + 1)):
                return False
        return True
