# cython: language_level=3, boundscheck=False, wraparound=False
"""The kinds of message fields, as predicates (True: the value is of that kind).

``rayx.messages`` names a kind for every field it declares; receivers that do
not trust their sender check each message before a handler sees it. The
predicates run on every message a raylet's client socket or a worker's link
takes, so they are compiled: typed access to TaskSpec fields, no allocation.
The limits here bound what one message may make a receiver hold.
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


def is_id(value):
    return _id(value)


def is_ids(value):
    return _ids(value)


def is_count(value):
    return type(value) is int and 0 <= value < (1 << 63)


def is_flag(value):
    return _flag(value)


def is_text(value):
    return type(value) is str and len(<str>value) <= MAX_TEXT


def is_blob(value):
    return PyBytes_CheckExact(value)


def is_blob_or_none(value):
    return value is None or PyBytes_CheckExact(value)


def is_info(value):
    return type(value) is dict and len(<dict>value) <= MAX_ENTRIES


def is_args(value):
    return (type(value) is list or type(value) is tuple) and len(value) <= MAX_ARGS


def is_spec(value):
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


def is_values(value):
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


def is_results(value):
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
