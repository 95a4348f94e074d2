"""The results of work a process pushes straight to other workers of its node:
actor calls sent to the actor's worker (``rayx.runtime.actor_calls``) and tasks
sent to workers the raylet lent it (``rayx.runtime.leased_tasks``). Both send
PUSH_TASK on a link and get PUSH_DONE back; what happens to the results is the
same, and lives here.

Who knows of the results: the worker registers the ones in the arena, and the
ones containing refs, with the raylet before it answers. A small plain result
is known only to the caller, which keeps it in its object cache (as it keeps
any small value it holds) and registers it with the raylet only if a ref to it
leaves the process: passed to a task, pickled into another object or call,
waited on through the raylet (``escape``). So a call whose result is simply
read costs the raylet nothing. Until then the caller's ref-count updates for
it are kept back (``outgoing``, part of every flush to the raylet).

Waiting: a thread waiting for pushed results waits here, on the link's replies.
A process holding CPUs (a task's worker, an actor that keeps CPUs) gives up
after ``WORKER_LOCAL_WAIT`` without a result arriving, and waits through the
raylet, which hands its CPUs back: what it waits for may need them.
"""
import collections
import threading
import time

from rayx import messages
from rayx._core import codec
from rayx.object_ref import ObjectRef
from rayx.runtime import serialization

# A worker process holding CPUs that waits for pushed results waits by itself
# while one arrives at least this often, then through the raylet (which hands
# its CPUs back meanwhile).
WORKER_LOCAL_WAIT = 0.005

_SUBMIT = messages.SUBMIT
_PUT = messages.PUT
_LINEAGE = messages.LINEAGE
_NORMAL_TASK = codec.NORMAL_TASK
_REFS = messages.REFS
_thread_events = threading.local()     # one reusable Event per waiting thread


class PushedCall:
    """An actor call or leased task pushed to a worker, until its results arrive (or
    it moves to the raylet)."""

    __slots__ = ("spec", "keep", "values", "done", "waiters", "resolving", "lost", "escaped",
                 "cancelled", "sent", "expected")

    def __init__(self, spec, keep, values=None):
        self.spec = spec
        self.keep = keep          # ObjectRefs of its arguments, held until it is done
        self.values = values      # {object id: inline bytes | None (on the node)} once resolved
        self.done = False         # answered, or handed to the raylet
        self.waiters = []         # Events of threads waiting in get
        self.resolving = False    # a wait for its arguments is out (actor calls)
        self.lost = False         # it was running when the link broke (actor calls)
        self.escaped = False      # a ref to a result left the process: register the results
        self.cancelled = False    # rayx.cancel reached it while it ran (leased tasks)
        self.sent = 0.0           # when it was sent (leased tasks: how long functions run)
        self.expected = None      # leased tasks: seconds it should run (None: unknown or long)


def kept_arguments(spec):
    """ObjectRefs that keep a pushed call's ref arguments alive until it is done (None if
    none)."""
    arg_refs = spec.arg_refs()
    nested = spec.nested_refs
    if not arg_refs and not nested:
        return None
    return [ObjectRef(oid) for oid in arg_refs] + [ObjectRef(oid) for oid in nested]


class PushedCalls:
    """The pushed calls of one process whose results are not in, and the results only
    this process knows of."""

    def __init__(self, cache, refs, conn, is_driver):
        self._cache = cache
        self._refs = refs
        self._conn = conn
        self._pending = {}        # return object id -> PushedCall not answered yet
        # object id -> (data, size, is_error, lineage): results only we know of; lineage
        # is the spec of the leased task that made it (None for an actor call's).
        self._unregistered = {}
        self._register = collections.deque()   # (object id, data, size, is_error, lineage)
        self._announce = collections.deque()   # results the worker registered: say we hold them
        self._lock = threading.Lock()
        # Seconds a wait for pushed results stays here (None: no limit; a driver has
        # nothing to hand back).
        self._local_wait_limit = None if is_driver else WORKER_LOCAL_WAIT

    def wait_here_always(self):
        """This process holds no resources to hand back (an actor that keeps none while
        alive): waits for pushed results stay here however long they take."""
        self._local_wait_limit = None

    def in_flight(self):
        """True while any pushed call's results are not in."""
        return bool(self._pending)

    def is_pending(self, object_id):
        """``object_id`` is a result of a pushed call not answered yet."""
        return object_id in self._pending

    def unregistered_count(self):
        return len(self._unregistered)

    # ------------------------------------------------------------ calls

    def track(self, call):
        """Refs to the returns of ``call``, which is now awaited here. Counted at once
        (no +1 event), so a drop before the next flush still reaches ``outgoing``,
        which then forgets the result."""
        object_ids = call.spec.return_ids()
        pending = self._pending
        for object_id in object_ids:
            pending[object_id] = call
        return self._refs.refs_registered_by_message(object_ids)

    def complete(self, call, results):
        """Results of ``call`` arrived: cache them (while their refs are held) and wake waiters."""
        with self._lock:      # against escape() from another thread
            notify = self._store_results(call, results)
        if notify:
            self._conn.wake_writer()
        self._finish(call)

    def _store_results(self, call, results):
        pending = self._pending
        cache = self._cache
        notify = False
        for object_id, data, size, nested, is_error in results:
            held = pending.pop(object_id, None) is not None
            if data is None or nested:
                # Registered by the worker: the raylet counts our ref from now on.
                self._announce.append((object_id, held))
                notify = True
                if not held:
                    continue
                if data is None:
                    cache.on_node(object_id)
                else:
                    cache.keep(object_id, data)
                continue
            lineage = call.spec if call.spec.task_type == _NORMAL_TASK else None
            if call.escaped:
                self._register.append((object_id, data, size, is_error, lineage))
                notify = True
            if held:
                cache.keep(object_id, data)
                if not call.escaped:
                    self._unregistered[object_id] = (data, size, is_error, lineage)
        return notify

    def fail(self, call, error):
        """``call`` ends with ``error`` as the value of each of its returns."""
        self.fail_with(call, serialization.serialize_error(error).to_bytes())

    def fail_with(self, call, error_data):
        """``call`` ends with the serialized error ``error_data`` as each of its returns."""
        self.complete(call, [(oid, error_data, len(error_data), (), True)
                             for oid in call.spec.return_ids()])

    def send_via_raylet(self, call):
        """``call`` (its spec ready to submit) goes through the raylet after all."""
        spec = call.spec
        self.escape_args(spec)
        conn = self._conn
        # Under the lock of ``outgoing``: a drop it hides from the next flush (the
        # call was pending) is seen here, and one it does not hide goes out after
        # the SUBMIT (queued before the flush takes the queue).
        with self._lock:
            dropped = [oid for oid in spec.return_ids() if oid not in self._pending]
            conn.defer(_SUBMIT(spec))
            if dropped:
                # The caller dropped these refs while the call waited here; the SUBMIT
                # makes the raylet count a ref for us, so drop it again.
                conn.defer(_REFS((), dropped))
            # The SUBMIT goes out before the drops of the kept argument refs, so the
            # raylet holds the arguments first.
            self.moved(call)
        conn.push()

    def moved(self, call):
        """``call`` now goes through the raylet: waiters look there."""
        pending = self._pending
        for object_id in call.spec.return_ids():
            pending.pop(object_id, None)
        self._finish(call)

    @staticmethod
    def _finish(call):
        call.done = True
        call.keep = None
        for event in call.waiters:
            event.set()

    # -------------------------------------------------- the raylet's view

    def escape(self, object_id):
        """A ref to ``object_id`` leaves this process (or is waited on through the raylet):
        if the raylet does not know the object, register it (now, or when it arrives)."""
        with self._lock:
            call = self._pending.get(object_id)
            if call is not None:
                call.escaped = True
                return
            entry = self._unregistered.pop(object_id, None)
            if entry is None:
                return
            self._register.append((object_id, *entry))
        self._conn.wake_writer()

    def escape_all(self, object_ids):
        if self._pending or self._unregistered:
            for object_id in object_ids:
                self.escape(object_id)

    def escape_args(self, spec):
        """The ref arguments of ``spec`` go to the raylet (a task submitted there)."""
        if self._pending or self._unregistered:
            for object_id in spec.arg_refs():
                self.escape(object_id)

    def outgoing(self, added, removed):
        """Part of every flush to the raylet, given the ref changes just drained: hides
        refs to results the raylet does not know, and returns the messages that must
        precede the rest (registrations). Returns (messages or None, added, removed)."""
        if not (self._pending or self._unregistered or self._register or self._announce):
            return None, added, removed
        with self._lock:
            added, removed = self._hide_unregistered(added, removed)
        messages_first = []
        if self._register or self._announce:
            self._registrations(messages_first)
        return messages_first, added, removed

    def _hide_unregistered(self, added, removed):
        pending = self._pending
        unregistered = self._unregistered
        if pending or unregistered:
            if added:
                added = [oid for oid in added if oid not in pending and oid not in unregistered]
            if removed:
                kept = []
                cache = self._cache
                for object_id in removed:
                    if object_id in pending:
                        del pending[object_id]           # its result will be dropped on arrival
                    elif object_id in unregistered:
                        del unregistered[object_id]
                        cache.forget(object_id)
                    else:
                        kept.append(object_id)
                removed = kept
        return added, removed

    def _registrations(self, out):
        """PUTs of escaped results (each makes us a holder; a leased task's lineage goes
        first, so the result can be rebuilt wherever its ref goes), and our refs to
        results the raylet knows now; the ones nobody here holds any more are dropped
        again."""
        holds = self._refs.holds
        held = []
        released = []
        register = self._register
        recorded = set()
        while register:
            object_id, data, size, is_error, lineage = register.popleft()
            if lineage is not None and lineage.task_id not in recorded:
                recorded.add(lineage.task_id)
                out.append(_LINEAGE(lineage))
            out.append(_PUT(object_id, data, size, (), is_error))
            if not holds(object_id):
                released.append(object_id)
        announce = self._announce
        while announce:
            object_id, was_held = announce.popleft()
            if was_held and holds(object_id):
                held.append(object_id)
            else:
                released.append(object_id)    # nobody here holds it: let the raylet free it
        if held:
            out.append(_REFS(held, ()))
        if released:
            out.append(_REFS(released, released))

    # ------------------------------------------------------------ waiting

    def wait(self, object_ids, timeout):
        """Wait (up to ``timeout``) for the pushed calls producing ``object_ids`` (see
        ``_wait_calls``); the rest is awaited through the raylet. Returns the ids still
        missing."""
        pending = self._pending
        calls = {}
        for object_id in object_ids:
            call = pending.get(object_id)
            if call is not None:
                calls[id(call)] = call
        calls = list(calls.values())
        if calls:
            self._wait_calls(calls, timeout)
        missing = self._cache.not_ready(object_ids)
        self.escape_all(missing)          # the rest is awaited through the raylet
        return missing

    def wait_some(self, object_ids, num_ready, timeout):
        """Wait (up to ``timeout``; a worker process holding CPUs only while results keep
        coming) until ``num_ready`` of the pushed calls making ``object_ids`` are done.
        True if every id was made by a pushed call still pending (else nothing is
        awaited here)."""
        pending = self._pending
        calls = {}
        for object_id in object_ids:
            call = pending.get(object_id)
            if call is None:
                return False
            calls[id(call)] = call
        self._wait_calls(list(calls.values()), timeout, num_ready)
        return True

    def _wait_calls(self, calls, timeout, count=None):
        """Wait until ``count`` (default: all) of ``calls`` are done, or ``timeout`` passes
        (or, see the module's docstring, nothing arrived for the local wait limit)."""
        event = getattr(_thread_events, "event", None)
        if event is None:
            event = _thread_events.event = threading.Event()
        event.clear()
        for call in calls:
            call.waiters.append(event)
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        idle_limit = self._local_wait_limit
        conn = self._conn
        conn.flush_links()          # our calls may still wait for the writer thread
        needed = len(calls) if count is None else min(count, len(calls))
        position = 0                # calls[:position] are done (when waiting for all)
        try:
            while True:
                if count is None:
                    while position < needed and calls[position].done:
                        position += 1
                    if position >= needed:
                        return
                elif _count_done(calls, needed) >= needed:
                    return
                step = None if deadline is None else deadline - time.monotonic()
                if idle_limit is not None and (step is None or step > idle_limit):
                    step = idle_limit
                if step is not None and step <= 0:
                    return
                if not conn.wait_for(event, step):
                    return          # time is up, or nothing arrived for idle_limit
                event.clear()
        finally:
            for call in calls:
                try:
                    call.waiters.remove(event)
                except ValueError:
                    pass


def _count_done(calls, enough):
    """How many of ``calls`` are done, counting no further than ``enough``."""
    done = 0
    for call in calls:
        if call.done:
            done += 1
            if done >= enough:
                break
    return done
