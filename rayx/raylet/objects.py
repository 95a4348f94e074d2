"""The raylet's table of the objects of its node: state, where the bytes are,
who refers to them, and who waits for them.

An object is PENDING until its creating task finishes (or it is put), then
READY with its bytes either inline (small values, kept here) or sealed in the
node's arena. Its reference count adds up every process that holds an
ObjectRef to it (each at most once), every pending task that takes it as an
argument, and every object that contains a ref to it. When the count falls to
zero the object is freed: dropped from here and deleted from the arena (the
arena defers the free while some process still has it pinned).

Copies kept for another node (results of tasks it forwarded here, which it
owns) count one reference per owner until that owner frees them, or dies
(``keep_for`` / ``release_for`` / ``release_all_for``).

Borrowing goes the other way with the same two ends: refs nested in the
arguments of a task another node forwarded here, still held here when the
task ends (an actor kept one), are borrowed from that node (``borrow_from``):
it keeps them for this node (``keep_for``) until this node frees them, which
sends it a FreeObjects as for any copy it keeps for us (``owner_pins``). A ref
the lender itself holds for this node is not borrowed back (that would be a
cycle neither side frees).
"""

PENDING = 0
READY = 1


class ObjectEntry:
    __slots__ = ("object_id", "state", "data", "size", "in_arena", "is_error",
                 "refcount", "waiters", "nested", "ever_referenced", "remote_locations", "owner_pins",
                 "spilled", "lost_on")

    def __init__(self, object_id):
        self.object_id = object_id
        self.state = PENDING
        self.data = None
        self.size = 0
        self.in_arena = False
        self.is_error = False
        self.refcount = 0
        self.waiters = None
        self.nested = ()
        self.ever_referenced = False
        self.remote_locations = set()   # other nodes known to hold a copy
        self.owner_pins = None          # nodes keeping their copy alive for us (we own it)
        self.spilled = None             # path of its file while spilled out of the arena
        self.lost_on = None             # a dead node that was known to hold it (none here)

    def add_owner_pin(self, node_id, holds_copy=True):
        if self.owner_pins is None:
            self.owner_pins = set()
        self.owner_pins.add(node_id)
        if holds_copy:
            self.remote_locations.add(node_id)


class ObjectTable:
    def __init__(self, arena, on_free=None):
        self.arena = arena
        self.entries = {}
        self._on_free = on_free
        self._kept_for = {}        # owner node id -> {object id: references kept for it}

    def __len__(self):
        return len(self.entries)

    def get(self, object_id):
        return self.entries.get(object_id)

    def entry(self, object_id):
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry(object_id)
        return entry

    def is_ready(self, object_id):
        entry = self.entries.get(object_id)
        return entry is not None and entry.state == READY

    def add_waiter(self, object_id, waiter):
        """Call ``waiter.object_ready(entry)`` once the object is READY."""
        entry = self.entry(object_id)
        if entry.waiters is None:
            entry.waiters = [waiter]
        else:
            entry.waiters.append(waiter)
        return entry

    def remove_waiter(self, object_id, waiter):
        entry = self.entries.get(object_id)
        if entry is not None and entry.waiters:
            try:
                entry.waiters.remove(waiter)
            except ValueError:
                pass

    def mark_ready(self, object_id, data, size, nested, is_error):
        """Record that the object exists (inline ``data``, or in the arena when
        ``data`` is None) and wake everything waiting for it."""
        entry = self.entry(object_id)
        if entry.state == READY:
            return entry  # a retried task made it again; objects are immutable
        entry.state = READY
        entry.data = data
        entry.size = size
        entry.in_arena = data is None
        entry.is_error = is_error
        if nested:
            entry.nested = tuple(nested)
            for inner in nested:
                self.incref(inner)
        waiters = entry.waiters
        entry.waiters = None
        if waiters:
            for waiter in waiters:
                waiter.object_ready(entry)
        if entry.refcount == 0 and entry.ever_referenced:
            self._free(entry)
        return entry

    def incref(self, object_id):
        entry = self.entry(object_id)
        entry.refcount += 1
        entry.ever_referenced = True

    def decref(self, object_id):
        entry = self.entries.get(object_id)
        if entry is None:
            return
        entry.refcount -= 1
        if entry.refcount <= 0 and (entry.state == READY or entry.owner_pins):
            self._free(entry)

    def keep_for(self, owner, object_id):
        """Keep the object until ``owner`` frees it (or dies)."""
        self.incref(object_id)
        kept = self._kept_for.setdefault(owner, {})
        kept[object_id] = kept.get(object_id, 0) + 1

    def release_for(self, owner, object_ids):
        """``owner`` freed these objects: drop the references kept for it."""
        kept = self._kept_for.get(owner, {})
        for object_id in object_ids:
            count = kept.get(object_id, 0)
            if count:
                if count == 1:
                    del kept[object_id]
                else:
                    kept[object_id] = count - 1
                self.decref(object_id)

    def borrow_from(self, lender, object_ids):
        """The refs among ``object_ids`` (given to a task ``lender`` forwarded here,
        whose inputs are released now) that are still held here: each is kept alive
        on ``lender`` for this node from now on. Returns them, each once."""
        borrowed = []
        lent_back = self._kept_for.get(lender, ())
        for object_id in dict.fromkeys(object_ids):
            entry = self.entries.get(object_id)
            if entry is None or entry.refcount <= 0 or object_id in lent_back \
                    or (entry.owner_pins and lender in entry.owner_pins):
                continue
            entry.add_owner_pin(lender, holds_copy=False)
            borrowed.append(object_id)
        return borrowed

    def release_all_for(self, owner):
        """``owner`` died: drop every reference kept for it."""
        for object_id, count in self._kept_for.pop(owner, {}).items():
            for _ in range(count):
                self.decref(object_id)

    def node_died(self, node_id):
        """``node_id`` is dead: nothing is kept for it any more, and no object is
        there any more."""
        self.release_all_for(node_id)
        for entry in list(self.entries.values()):
            if node_id in entry.remote_locations:
                entry.remote_locations.discard(node_id)
                if entry.state != READY:
                    entry.lost_on = node_id
            if entry.owner_pins:
                entry.owner_pins.discard(node_id)

    def _free(self, entry):
        if entry.waiters and not all(getattr(w, "done", False) for w in entry.waiters):
            return  # someone still waits on it (e.g. a get racing a decref)
        del self.entries[entry.object_id]
        if entry.in_arena:
            try:
                self.arena.delete(entry.object_id)
            except Exception:
                pass
        for inner in entry.nested:
            self.decref(inner)
        if self._on_free is not None:
            self._on_free(entry)

    def stats(self):
        ready = sum(1 for e in self.entries.values() if e.state == READY)
        in_arena = sum(1 for e in self.entries.values() if e.in_arena)
        inline_bytes = sum(e.size for e in self.entries.values() if e.state == READY and not e.in_arena)
        return {"objects": len(self.entries), "ready": ready, "in_arena": in_arena,
                "inline_bytes": inline_bytes}
