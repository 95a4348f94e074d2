"""ObjectRef: a future naming an object by its 20-byte id, and the per-process
reference counting that keeps the object alive while any ref to it exists.

Creating and dropping refs must be cheap and safe from any thread (and from
a deallocation at any moment), so a ref only appends an event to a deque; the
process's core worker drains the deque whenever it sends to its raylet and
tells the raylet only about net 0->1 and 1->0 transitions (see
``LocalRefCounter.drain``). The class and the counting are compiled
(``rayx/_core/objectref.pyx``); until a core worker exists, refs (e.g.
unpickled in a test) are simply not counted.

``set_escape_hook``: the core worker registers results of pushed calls (actor
calls, leased tasks) that only this process knows of with the raylet once a
ref to them is pickled (leaves the process).
"""
import collections
import threading

from rayx._core.objectref import (ObjectRef, apply_events, counting_into, escape_hook,
                                  set_escape_hook, set_events)

__all__ = ["ObjectRef", "LocalRefCounter", "escape_hook", "set_escape_hook"]


class LocalRefCounter:
    """Per-process reference counts of object ids, fed by ObjectRef events."""

    def __init__(self):
        self.events = collections.deque()
        self.counts = {}
        self._lock = threading.Lock()

    def install(self):
        set_events(self.events)

    def uninstall(self):
        if counting_into() is self.events:
            set_events(None)

    def drain(self):
        """Apply pending events; return (newly referenced ids, no longer referenced ids)."""
        if not self.events:
            return (), ()
        with self._lock:
            return apply_events(self.events, self.counts)

    def holds(self, object_id):
        """This process holds a ref to ``object_id`` (as of the last ``drain``)."""
        return object_id in self.counts

    def ref_registered_by_message(self, object_id):
        """``refs_registered_by_message`` for one id (a PUT)."""
        with self._lock:
            counts = self.counts
            counts[object_id] = counts.get(object_id, 0) + 1
        return ObjectRef.counted_already(object_id)

    def refs_registered_by_message(self, object_ids):
        """New refs whose first reference the raylet learns from the message that
        creates them (a SUBMIT holds its returns for the submitter, a PUT its object
        for the putter), so no "added" update travels for them; and since their +1
        is counted here at once, their drop is always reported, even when it comes
        before the next flush (an event pair made and dropped between two flushes
        would cancel out). The message must be queued before the refs can drop."""
        refs = []
        with self._lock:
            counts = self.counts
            for object_id in object_ids:
                counts[object_id] = counts.get(object_id, 0) + 1
                refs.append(ObjectRef.counted_already(object_id))
        return refs
