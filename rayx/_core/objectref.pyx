# cython: language_level=3
"""ObjectRef, and the per-process reference counting behind it, compiled.

An ObjectRef names an object by its 20-byte id. Every ObjectRef made or
dropped appends ``(object id, +1 | -1)`` to the process's event deque (set by
``rayx.object_ref.LocalRefCounter``); before each write to the raylet the core
worker applies them (``apply_events``) and learns which ids went from 0 to held
and from held to 0. Getting an object that holds 10,000 refs makes 20,000 such
events, and every call makes a few, so the class, the counting and the
one-pass check of the refs given to ``wait`` (``unique_ids_of``) are compiled:
a few C operations per ref, no Python frames.
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


def unique_ids_of(list refs, str caller):
    """The ids of ``refs`` in order, checking in one pass that each is an ObjectRef
    (TypeError) and that no id repeats (ValueError). ``caller`` names the API call."""
    cdef list ids = []
    cdef set seen = set()
    cdef object ref, object_id
    for ref in refs:
        if type(ref) is not ObjectRef:
            raise TypeError(f"{caller}() expects ObjectRefs, got a {type(ref).__name__} in the list")
        object_id = (<ObjectRef>ref)._id
        if object_id in seen:
            raise ValueError(f"{caller.capitalize()} requires a list of unique object refs.")
        seen.add(object_id)
        ids.append(object_id)
    return ids



cdef object _events = None        # the process's deque of (object id, +1 | -1), or None
cdef object _escape_hook = None   # called with the id of every ref pickled here


def set_events(events):
    """Count refs into ``events`` from now on (None: stop counting)."""
    global _events
    _events = events


def counting_into():
    return _events


def set_escape_hook(hook):
    """``hook(object id)`` runs whenever a ref is pickled (it leaves the process)."""
    global _escape_hook
    _escape_hook = hook


def escape_hook():
    return _escape_hook


cdef class ObjectRef:
    """A reference to an object in the cluster; pass it to tasks or ``rayx.get`` it."""

    cdef readonly bytes _id
    cdef object __weakref__

    def __init__(self, object_id):
        if type(object_id) is not bytes:
            object_id = bytes(object_id)
        self._id = object_id
        if _events is not None:
            _events.append((object_id, 1))

    @staticmethod
    def counted_already(bytes object_id):
        """A ref whose +1 the caller has put in the counts itself (no event)."""
        cdef ObjectRef ref = ObjectRef.__new__(ObjectRef)
        ref._id = object_id
        return ref

    def __dealloc__(self):
        if _events is not None and self._id is not None:
            _events.append((self._id, -1))

    def binary(self):
        return self._id

    def hex(self):
        return self._id.hex()

    def task_id(self):
        from rayx._core.ids import TaskID
        return TaskID(self._id[:16])

    def __eq__(self, other):
        return type(other) is ObjectRef and (<ObjectRef>other)._id == self._id

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self._id)

    def __repr__(self):
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        ctx = _current_context()
        if ctx is not None:
            ctx.nested_refs.append(self._id)
        if _escape_hook is not None:
            _escape_hook(self._id)
        return (ObjectRef, (self._id,))

    def future(self):
        """A concurrent.futures.Future that completes with the object's value."""
        from rayx.runtime.driver import core_worker
        return core_worker().future_of(self)

    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()


from rayx.runtime.serialization import current_context as _current_context
