# cython: language_level=3
"""Applying a process's ObjectRef events to its reference counts, compiled.

Every ObjectRef created or dropped appends ``(object id, +1 | -1)`` to a deque
(``rayx.object_ref``); before each write to the raylet the core worker applies
them here and learns which ids went from 0 to held and from held to 0. Getting
an object that holds 10,000 refs makes 20,000 events, so this loop is a hot
path: here it is a few dict operations per event, with no Python frames.
Also the one-pass check of a list of refs that ``wait`` does on every call.
"""
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_DelItem
from cpython.object cimport PyObject


def apply_events(object events, dict counts):
    """Pop every event from ``events`` into ``counts`` ({object id: count > 0});
    return (ids now held that were not, ids no longer held that were)."""
    cdef dict touched = {}
    cdef tuple event
    cdef object object_id
    cdef PyObject *found
    cdef long before, after
    popleft = events.popleft
    while events:
        event = <tuple>popleft()
        object_id = event[0]
        found = PyDict_GetItem(counts, object_id)
        before = 0 if found is NULL else <long><object>found
        if PyDict_GetItem(touched, object_id) is NULL:
            PyDict_SetItem(touched, object_id, before)
        after = before + <long>event[1]
        if after > 0:
            PyDict_SetItem(counts, object_id, after)
        elif found is not NULL:
            PyDict_DelItem(counts, object_id)
    added = []
    removed = []
    for object_id, was in touched.items():
        if was == 0:
            if PyDict_GetItem(counts, object_id) is not NULL:
                added.append(object_id)
        elif PyDict_GetItem(counts, object_id) is NULL:
            removed.append(object_id)
    return added, removed


def unique_ids_of(list refs, type ref_type, str caller):
    """The ids of ``refs`` in order, checking in one pass that each is a ``ref_type``
    (TypeError) and that no id repeats (ValueError). ``caller`` names the API call."""
    cdef list ids = []
    cdef set seen = set()
    cdef object ref, object_id
    for ref in refs:
        if type(ref) is not ref_type:
            raise TypeError(f"{caller}() expects ObjectRefs, got a {type(ref).__name__} in the list")
        object_id = ref._id
        if object_id in seen:
            raise ValueError(f"{caller.capitalize()} requires a list of unique object refs.")
        seen.add(object_id)
        ids.append(object_id)
    return ids
