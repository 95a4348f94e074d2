"""Get and wait requests from the raylet's clients (WAIT, CANCEL_WAIT).

A request names objects and how many of them must be ready; it registers as
a waiter on each object not ready yet (the object manager pulls the remote
ones when ``fetch`` is set; without it the request only asks whether the
objects exist somewhere) and is answered (WAIT_REPLY, with the inline bytes of
small objects when ``with_data``) once enough are ready. With ``notify`` the
client also hears, one READY_NOTE each, about the rest as they become ready,
so a later wait on them needs no round trip.

A worker blocked in such a request gives its CPUs back while it waits, so
that the tasks it waits for (nested tasks) can run; it takes them back when
its last request is answered or cancelled, even if that oversubscribes the
node for a moment.
"""
from rayx import messages
from rayx.raylet.objects import READY

WAIT_REPLY = messages.WAIT_REPLY
READY_NOTE = messages.READY_NOTE


class WaitRequest:
    """A get or wait from a client: answered once ``num_ready`` objects are ready."""

    __slots__ = ("waits", "conn", "request_id", "object_ids", "num_ready", "with_data", "ready", "done",
                 "fetch", "notify", "notes_left")

    def __init__(self, waits, conn, request_id, object_ids, num_ready, with_data, fetch, notify):
        self.waits = waits
        self.conn = conn
        self.request_id = request_id
        self.object_ids = object_ids
        self.num_ready = num_ready
        self.with_data = with_data
        self.ready = 0
        self.done = False
        self.fetch = fetch
        self.notify = notify
        self.notes_left = 0

    def object_ready(self, entry):
        if self.done:
            # Answered already; the client asked to hear about the rest.
            self.conn.send(READY_NOTE(entry.object_id))
            self.notes_left -= 1
            if self.notes_left <= 0:
                self.conn.notifiers.discard(self)
            return
        self.ready += 1
        if self.ready >= self.num_ready:
            self.waits.complete(self)


class Waits:
    def __init__(self, objects, resources, spiller, want_object, schedule_dispatch):
        self._objects = objects
        self._resources = resources
        self._spiller = spiller
        self._want_object = want_object
        self._schedule_dispatch = schedule_dispatch

    def wait(self, conn, request_id, object_ids, num_ready, with_data, fetch=True, notify=False):
        """WAIT: answered now if enough objects are ready, else when they are."""
        unique = list(dict.fromkeys(object_ids))
        request = WaitRequest(self, conn, request_id, unique, min(num_ready, len(unique)), with_data,
                              fetch, notify and fetch)
        objects = self._objects
        pending = []
        for object_id in unique:
            entry = objects.get(object_id)
            if entry is not None and (entry.state == READY or (not fetch and entry.remote_locations)):
                request.ready += 1
            else:
                pending.append(object_id)
        if request.ready >= request.num_ready:
            self.complete(request)
            return
        for object_id in pending:
            entry = objects.add_waiter(object_id, request)
            if fetch:
                self._want_object(entry)
        conn.waits[request_id] = request
        worker = conn.worker
        if worker is not None and worker.allocation is not None and not worker.blocked_cpus:
            # A worker blocked in get gives its CPUs back so nested tasks can run.
            worker.blocked_cpus = self._resources.release_cpu(worker.allocation)
            if worker.blocked_cpus:
                self._schedule_dispatch()

    def complete(self, request):
        request.done = True
        conn = request.conn
        conn.waits.pop(request.request_id, None)
        objects = self._objects
        ready = []
        lingering = False
        for object_id in request.object_ids:
            entry = objects.get(object_id)
            if entry is None or entry.state != READY:
                if request.notify and entry is not None:
                    lingering = True          # stays registered, to send READY_NOTE
                    request.notes_left += 1
                    if entry.waiters is None or request not in entry.waiters:
                        objects.add_waiter(object_id, request)
                else:
                    objects.remove_waiter(object_id, request)
                if entry is not None and not request.fetch and entry.remote_locations:
                    ready.append((object_id, None, True))
                continue
            data = entry.data if request.with_data else None
            if request.with_data and entry.spilled:
                self._spiller.restore(entry)
            ready.append((object_id, data, entry.in_arena))
        if lingering:
            conn.notifiers.add(request)
        conn.send(WAIT_REPLY(request.request_id, ready))
        self._unblock(conn.worker)

    def cancel(self, conn, request_id):
        """CANCEL_WAIT: the client gave up on a request."""
        request = conn.waits.pop(request_id, None)
        if request is None:
            return
        self._drop(request)
        self._unblock(conn.worker)

    def connection_gone(self, conn):
        """The client disconnected: its requests, answered or not, wait no more."""
        for request in list(conn.waits.values()) + list(conn.notifiers):
            self._drop(request)
        conn.waits.clear()

    def _drop(self, request):
        request.done = True
        objects = self._objects
        for object_id in request.object_ids:
            objects.remove_waiter(object_id, request)

    def _unblock(self, worker):
        if worker is not None and worker.blocked_cpus and not worker.conn.waits:
            self._resources.reacquire_cpu(worker.blocked_cpus)
            worker.blocked_cpus = 0
