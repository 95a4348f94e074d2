"""What a process knows of the objects it holds refs to, so that a ``get`` or
``wait`` on them costs no round trip: the serialized bytes of small objects it
put, fetched or got back from pushed work, and the ids of objects known to be
on its node (sealed in the arena, or held by the raylet: ready to read).

An entry lives while the process holds a ref to the object: the core worker
forgets the ids whose last ref this process dropped (at the flush that tells
the raylet). Lookups are bound builtins (``bytes_of``, ``has_bytes``), so the
hot paths pay no Python call for them.
"""
from rayx.runtime.serialization import KIND_ERROR

_ERROR_KIND = bytes((KIND_ERROR,))


class ObjectCache:
    """Bytes of the small objects this process holds, and ids known to be on this node."""

    __slots__ = ("_bytes", "_on_node", "bytes_of", "has_bytes")

    def __init__(self):
        self._bytes = {}            # object id -> serialized bytes
        self._on_node = set()       # ids of objects known to be on this node (ready to read)
        self.bytes_of = self._bytes.get             # bytes_of(object_id) -> bytes | None
        self.has_bytes = self._bytes.__contains__   # has_bytes(object_id) -> bool

    def __len__(self):
        return len(self._bytes) + len(self._on_node)

    def keep(self, object_id, data):
        """The serialized bytes of a small object this process holds a ref to."""
        self._bytes[object_id] = data

    def on_node(self, object_id):
        """``object_id`` is ready on this node (in the arena, or with the raylet)."""
        self._on_node.add(object_id)

    def arrived(self, object_id, data, in_arena):
        """An object the raylet answered for: its bytes, or (``in_arena``) where they are."""
        if in_arena:
            self._on_node.add(object_id)
        else:
            self._bytes[object_id] = data

    def all_on_node(self, object_ids):
        """Every one of ``object_ids`` is ready on this node."""
        self._on_node.update(object_ids)

    def forget(self, object_id):
        self._bytes.pop(object_id, None)
        self._on_node.discard(object_id)

    def forget_all(self, object_ids):
        """This process no longer holds refs to ``object_ids``."""
        data = self._bytes
        on_node = self._on_node
        for object_id in object_ids:
            data.pop(object_id, None)
            on_node.discard(object_id)

    def is_ready(self, object_id):
        return object_id in self._bytes or object_id in self._on_node

    def without_bytes(self, object_ids):
        """The ids among ``object_ids`` whose bytes are not here."""
        data = self._bytes
        return [object_id for object_id in object_ids if object_id not in data]

    def not_ready(self, object_ids):
        """The ids among ``object_ids`` neither here nor known to be on this node."""
        data = self._bytes
        on_node = self._on_node
        return [oid for oid in object_ids if oid not in data and oid not in on_node]

    def ready_among(self, object_ids):
        """The set of ``object_ids`` here or known to be on this node (set operations, not
        a Python loop per id: waiting repeatedly on a long list stays cheap)."""
        ready = self._on_node.intersection(object_ids)
        ready.update(filter(self._bytes.__contains__, object_ids))
        return ready

    def first_ready(self, refs, object_ids, num_ready):
        """(ready, not ready) when the first ``num_ready`` ready refs are known here
        already, else None. Looks down the list only as far as it must (results mostly
        arrive in the order they were asked for), so waiting down a long list one
        ref at a time stays cheap."""
        data = self._bytes
        on_node = self._on_node
        positions = []
        for position, object_id in enumerate(object_ids):
            if object_id in data or object_id in on_node:
                positions.append(position)
                if len(positions) == num_ready:
                    break
        else:
            return None
        ready = [refs[position] for position in positions]
        not_ready = []
        start = 0
        for position in positions:
            not_ready.extend(refs[start:position])
            start = position + 1
        not_ready.extend(refs[start:])
        return ready, not_ready

    def local_values(self, object_ids):
        """What this process can send of ``object_ids`` now: ({id: inline bytes, or None
        when the object is on the node (the receiver reads the arena, else asks its
        raylet)}, [ids not here], the bytes of the first one that is an error or None)."""
        data_of = self._bytes.get
        on_node = self._on_node
        resolved = {}
        missing = []
        for object_id in object_ids:
            data = data_of(object_id)
            if data is not None:
                if data[:1] == _ERROR_KIND:
                    return resolved, missing, data
                resolved[object_id] = data
            elif object_id in on_node:
                resolved[object_id] = None
            else:
                missing.append(object_id)
        return resolved, missing, None
