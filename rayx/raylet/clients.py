"""The server end of the raylet's Unix socket: one ``ClientConnection`` per
driver or worker, and the table that hands each message to its handler.

Frames are decoded by the Cython codec (``rayx._core.codec.FrameReader``); a
malformed frame, or a message that does not match its declaration
(``rayx.messages.check``: kinds and sizes of every field), closes that
connection only, before any handler sees it; an error in one handler loses
that message only. Replies are coalesced: whatever the event-loop turn
sends to one client goes out in one write. The handlers of
``rayx.messages``' client messages are methods of the part of the raylet that
does the job (waits, completion, leases, ...), checked against the message
declarations when the table is built; this module keeps the small ones
(registration, references held, puts) and the REQUEST operations.

``Drivers`` are the drivers connected here: where worker output and warnings
go.
"""
import asyncio
import logging

from rayx import messages
from rayx._core import codec

logger = logging.getLogger("rayx.raylet")

check = messages.check
REGISTER_TAG = messages.REGISTER.tag
REGISTERED = messages.REGISTERED
REPLY = messages.REPLY
LOG = messages.LOG
STDERR = 2


class ClientConnection(asyncio.Protocol):
    """One driver or worker connected to the raylet."""

    def __init__(self, loop, handlers, on_lost):
        self.loop = loop
        self.handlers = handlers       # {tag: handler(conn, *fields)}
        self.on_lost = on_lost
        self.transport = None
        self.reader = codec.FrameReader(messages.MAX_FRAME_BYTES)
        self.out = []            # messages to send at the end of this event-loop turn
        self.kind = None         # "driver" or "worker", once registered
        self.worker = None       # its Worker, for a worker
        self.job_id = b""
        self.pid = 0
        self.held = set()        # object ids it holds refs to (counted once each)
        self.waits = {}          # request id -> WaitRequest not answered yet
        self.notifiers = set()   # answered waits still sending READY_NOTEs

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            received = self.reader.feed(data)
        except Exception as exc:
            logger.error("closing a connection that sent a malformed frame: %s", exc)
            self.transport.close()
            return
        handlers = self.handlers
        for message in received:
            try:
                check(message)
                handler = handlers.get(message[0])
                if handler is None:
                    raise messages.BadMessage(f"{messages.ALL[message[0]].name} is not for the raylet")
                if self.kind is None and message[0] != REGISTER_TAG:
                    raise messages.BadMessage(f"{messages.ALL[message[0]].name} before REGISTER")
            except messages.BadMessage as exc:
                logger.error("closing the connection of %s: %s", self.describe(), exc)
                self.transport.close()
                return
            try:
                handler(self, *message[1:])
            except Exception:
                logger.exception("error handling message %r", message[:1])

    def connection_lost(self, exc):
        self.on_lost(self)

    def describe(self):
        """The peer, for logs: "worker pid 123", or "an unregistered client"."""
        return f"{self.kind} pid {self.pid}" if self.kind else "an unregistered client"

    def send(self, message):
        out = self.out
        out.append(message)
        if len(out) == 1:
            self.loop.call_soon(self._flush)

    def _flush(self):
        out = self.out
        if out and not self.transport.is_closing():
            self.transport.write(codec.pack_frames(out))
        self.out = []


class Drivers:
    """The drivers connected to this node."""

    def __init__(self):
        self._connections = set()

    def add(self, conn):
        self._connections.add(conn)

    def remove(self, conn):
        self._connections.discard(conn)

    def has_job(self, job_id):
        return any(conn.job_id == job_id for conn in self._connections)

    def log(self, job_id, stream, text):
        """Worker output: to the drivers of ``job_id`` (all of them if none, or no job)."""
        drivers = self._connections
        targets = [d for d in drivers if not job_id or d.job_id == job_id] or drivers
        for driver in targets:
            driver.send(LOG(stream, text))

    def warn(self, submitter, text):
        """A warning about a task: to its submitter if a driver, else to every driver."""
        targets = [submitter] if submitter is not None and submitter.kind == "driver" \
            else list(self._connections)
        for target in targets:
            target.send(LOG(STDERR, text))


class ClientHandlers:
    """The handler table of the client messages, and the connections that use it."""

    def __init__(self, loop, welcome, objects, pool, drivers, peers, scheduler, results, waits,
                 completion, dispatcher, leases, actors, router, spiller, status, failures):
        self._loop = loop
        self._welcome = welcome          # () -> the REGISTERED info of this node
        self._objects = objects
        self._pool = pool
        self._drivers = drivers
        self._peers = peers
        self._submit = scheduler.submit
        self._record_object = results.record_object
        self._waits = waits
        self._leases = leases
        self._actors = actors
        self._failures = failures
        self._schedule_dispatch = dispatcher.schedule
        self.table = messages.handlers({
            messages.REGISTER: self._on_register,
            messages.SUBMIT: self._on_submit,
            messages.PUT: self._on_put,
            messages.WAIT: waits.wait,
            messages.CANCEL_WAIT: waits.cancel,
            messages.TASK_DONE: completion.task_done,
            messages.REFS: self._on_refs,
            messages.REQUEST: self._on_request,
            messages.ACTOR_EXIT: self._on_actor_exit,
            messages.GIVE_BACK: dispatcher.give_back,
            messages.LISTENING: self._on_listening,
            messages.NOW_RUNNING: self._on_now_running,
            messages.RETURN_LEASES: leases.give_back,
            messages.LINEAGE: lambda conn, spec: scheduler.record_lineage(spec),
        }, leading=("conn",))
        # REQUEST operations: op name -> handler(conn, *args), answered with REPLY.
        self._requests = {
            "lease": leases.grant,
            "cancel": lambda conn, task_id, force: scheduler.cancel(task_id, force),
            "make_room": lambda conn, nbytes: spiller.room_for(nbytes),
            "status": lambda conn: status(),
            "kill_actor": lambda conn, actor_id, no_restart: router.kill_actor(actor_id, no_restart),
        }

    def connection(self):
        """A new ClientConnection (the socket server's protocol factory)."""
        return ClientConnection(self._loop, self.table, self.connection_lost)

    # ------------------------------------------------------------ messages

    def _on_register(self, conn, kind, worker_id, pid, job_id, info):
        conn.kind = kind
        conn.pid = pid
        conn.job_id = job_id
        if kind == "driver":
            self._drivers.add(conn)
            self._loop.create_task(self._peers.refresh())
        else:
            worker = self._pool.registered(worker_id, conn)
            if worker is None:
                conn.transport.close()
                return
            conn.worker = worker
            self._pool.push_idle(worker)
        conn.send(REGISTERED(self._welcome()))
        if kind != "driver":
            self._schedule_dispatch()

    def _on_submit(self, conn, spec):
        # The submitter holds refs to the returns from now on (it sends no REFS for them).
        held = conn.held
        objects = self._objects
        for object_id in spec.return_ids():
            if object_id not in held:
                held.add(object_id)
                objects.incref(object_id)
        self._submit(spec, conn)

    def _on_put(self, conn, object_id, data, size, nested_refs, is_error=False, held=True):
        if held and object_id not in conn.held:
            # The putter holds it from now on (it sends no REFS for it), so its
            # drop, however soon, frees the object.
            conn.held.add(object_id)
            self._objects.incref(object_id)
        self._objects.mark_ready(object_id, data, size, nested_refs, is_error)
        self._record_object(object_id, size)

    def _on_refs(self, conn, added, removed):
        held = conn.held
        objects = self._objects
        for object_id in added:
            if object_id not in held:
                held.add(object_id)
                objects.incref(object_id)
        for object_id in removed:
            if object_id in held:
                held.discard(object_id)
                objects.decref(object_id)

    def _on_listening(self, conn, path):
        if conn.worker is not None:
            conn.worker.direct_path = path

    def _on_now_running(self, conn, name):
        if conn.worker is not None:
            conn.worker.display_name = name

    def _on_actor_exit(self, conn, actor_id, reason, death_data):
        if conn.worker is not None:
            self._actors.actor_exit(conn.worker, actor_id, reason, death_data)

    def _on_request(self, conn, request_id, op, args):
        try:
            if op == "actor_direct":    # answered by the actor manager, maybe later
                self._actors.direct_probe(conn, request_id, *args)
                return
            result = self._requests[op](conn, *args)
            conn.send(REPLY(request_id, True, result))
        except Exception as exc:
            conn.send(REPLY(request_id, False, f"{type(exc).__name__}: {exc}"))

    # --------------------------------------------------------- disconnects

    def connection_lost(self, conn):
        """The client is gone: drop its waits, the refs it held and its leases; then
        the failure part (``rayx.raylet.failures``)."""
        self._waits.connection_gone(conn)
        objects = self._objects
        for object_id in conn.held:
            objects.decref(object_id)
        conn.held.clear()
        self._leases.holder_gone(conn)
        if conn.kind == "driver":
            self._drivers.remove(conn)
        self._failures.client_gone(conn)
