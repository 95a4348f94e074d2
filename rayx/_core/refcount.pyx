# cython: language_level=3
"""Applying a process's ObjectRef events to its reference counts, compiled.

Every ObjectRef created or dropped appends ``(object id, +1 | -1)`` to a deque
(``rayx.object_ref``); before each write to the raylet the core worker applies
them here and learns which ids went from 0 to held and from held to 0. Getting
an object that holds 10,000 refs makes 20,000 events, so this loop is a hot
path: here it is a few dict operations per event, with no Python frames.
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
