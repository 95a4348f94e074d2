"""ObjectRef: a future naming an object by its 20-byte id, and the per-process
reference counting that keeps the object alive while any ref to it exists.

Creating and dropping refs must be cheap and safe from any thread (and from
``__del__`` at any moment), so a ref only appends an event to a deque; the
process's core worker drains the deque whenever it sends to its raylet and
tells the raylet only about net 0->1 and 1->0 transitions (see
``LocalRefCounter.drain``).
"""
import collections
import threading

from rayx import serialization
from rayx._core.refcount import apply_events

# The events of the current process: (object id, +1 | -1). ``None`` until a
# core worker exists; refs created before that (e.g. unpickled in a test) are
# simply not counted.
_events = None

# Called with the id of every ref pickled in this process: the core worker
# registers results of direct actor calls that only this process knows of
# with the raylet once a ref to them leaves the process.
escape_hook = None


class LocalRefCounter:
    """Per-process reference counts of object ids, fed by ObjectRef events."""

    def __init__(self):
        self.events = collections.deque()
        self.counts = {}
        self._lock = threading.Lock()

    def install(self):
        global _events
        _events = self.events

    def uninstall(self):
        global _events
        if _events is self.events:
            _events = None

    def drain(self):
        """Apply pending events; return (newly referenced ids, no longer referenced ids)."""
        if not self.events:
            return (), ()
        with self._lock:
            return apply_events(self.events, self.counts)

    def held(self):
        with self._lock:
            return list(self.counts)

    def refs_registered_by_message(self, object_ids):
        """New refs whose first reference the raylet learns from the message that
        creates them (a SUBMIT holds its returns for the submitter), so no "added"
        update needs to travel for them."""
        refs = []
        with self._lock:
            counts = self.counts
            for object_id in object_ids:
                counts[object_id] = counts.get(object_id, 0) + 1
                ref = _new_ref(ObjectRef)
                ref._id = object_id
                refs.append(ref)
        return refs


_new_ref = object.__new__


class ObjectRef:
    """A reference to an object in the cluster; pass it to tasks or ``rayx.get`` it."""

    __slots__ = ("_id", "__weakref__")

    def __init__(self, object_id):
        self._id = object_id
        events = _events
        if events is not None:
            events.append((object_id, 1))

    def __del__(self):
        events = _events
        if events is not None:
            events.append((self._id, -1))

    def binary(self):
        return self._id

    def hex(self):
        return self._id.hex()

    def task_id(self):
        from rayx._core.ids import TaskID
        return TaskID(self._id[:16])

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self):
        return hash(self._id)

    def __repr__(self):
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        ctx = serialization.current_context()
        if ctx is not None:
            ctx.nested_refs.append(self._id)
        if escape_hook is not None:
            escape_hook(self._id)
        return (ObjectRef, (self._id,))

    def future(self):
        """A concurrent.futures.Future that completes with the object's value."""
        from rayx import api
        return api._global_worker().future_of(self)

    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()
