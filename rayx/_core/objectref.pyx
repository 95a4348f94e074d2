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

RUNTIME HOOKS. Like the rest of rayx._core, this module imports nothing of
rayx's Python runtime (which imports it): the runtime registers itself.
``rayx.runtime.serialization`` installs ``current_context`` when it is imported (a
pickled ref is recorded in the value being serialized), and ``rayx.runtime.driver``
installs ``future_of`` when it is imported (what ``ref.future()`` and ``await
ref`` use: the process's core worker, in a driver or a worker, connecting first
as every API call does). Both go through ``install_runtime``.

COUNTERS. ``debug_counters()`` tells how many refs this process made and how
many it freed (plain C integers, always kept); tests/conftest.py checks they
balance after every test that leaves no rayx session connected.
"""
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem, PyDict_DelItem
from cpython.object cimport PyObject

from rayx._core.ids cimport TaskID


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
cdef object _future_of = None     # ref -> concurrent.futures.Future (install_runtime)
cdef object _current_context = None   # () -> the SerializationContext being filled, or None
cdef Py_ssize_t _refs_made = 0    # refs made by __init__ / counted_already
cdef Py_ssize_t _refs_freed = 0   # ... and deallocated


def install_runtime(*, future_of=None, current_context=None):
    """The runtime registers itself here; each hook given replaces the one installed.

    ``future_of(ref)`` returns a concurrent.futures.Future of the ref's value
    (``ObjectRef.future``); ``current_context()`` returns the SerializationContext
    collecting the refs pickled on this thread, or None (``ObjectRef.__reduce__``).
    """
    global _future_of, _current_context
    if future_of is not None:
        _future_of = future_of
    if current_context is not None:
        _current_context = current_context


def debug_counters():
    """This process's count of refs made and freed (a dict)."""
    return {"refs_made": _refs_made, "refs_freed": _refs_freed}


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
        global _refs_made
        if type(object_id) is not bytes:
            object_id = bytes(object_id)
        if self._id is None:
            _refs_made += 1
        self._id = object_id
        if _events is not None:
            _events.append((object_id, 1))

    @staticmethod
    def counted_already(bytes object_id):
        """A ref whose +1 the caller has put in the counts itself (no event)."""
        global _refs_made
        cdef ObjectRef ref = ObjectRef.__new__(ObjectRef)
        ref._id = object_id
        _refs_made += 1
        return ref

    def __dealloc__(self):
        global _refs_freed
        if self._id is not None:
            _refs_freed += 1
            if _events is not None:
                _events.append((self._id, -1))

    def binary(self):
        return self._id

    def hex(self):
        return self._id.hex()

    def task_id(self):
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
        ctx = _current_context() if _current_context is not None else None
        if ctx is not None:
            ctx.nested_refs.append(self._id)
        if _escape_hook is not None:
            _escape_hook(self._id)
        return (ObjectRef, (self._id,))

    def future(self):
        """A concurrent.futures.Future that completes with the object's value."""
        if _future_of is None:
            raise RuntimeError("ObjectRef.future() needs the rayx runtime (import rayx)")
        return _future_of(self)

    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()

