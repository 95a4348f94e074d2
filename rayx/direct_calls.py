"""Direct actor calls: a caller on the actor's node sends its calls straight to
the actor's worker, over that worker's own Unix socket, and gets the results
back on it. Two process hops per call instead of four (caller -> raylet ->
worker -> raylet -> caller), and no raylet work on the way.

The raylet stays in charge: it says when a caller may go direct
(``ActorManager.direct_probe``: the actor is alive on this node and none of
this caller's calls are still queued there).

Who knows of the results: the actor's worker registers the ones in the
arena, and the ones containing refs, with the raylet before it answers. A
small plain result is known only to the caller, which keeps it (as it keeps
any small value it holds) and registers it with the raylet only if a ref to
it leaves the process: passed to a task, pickled into another object or
call, waited on through the raylet (``DirectCalls.escape``). So a call whose
result is simply read costs the raylet nothing.

One ``ActorChannel`` per actor this process calls, in one of three modes:

- PROBING: the raylet was asked where the actor takes calls; calls made
  meanwhile wait in the channel, in order.
- DIRECT: connected to the actor's worker; calls go there in the order they
  were made. A call's top-level ref arguments must be local first: values
  this process holds travel inline, objects in the arena by id, others are
  awaited through the raylet (later calls wait behind, keeping the order).
- RAYLET: the actor lives on another node, or is dead: calls go through the
  raylet with per-caller sequence numbers (it forwards or rejects them).

When the connection breaks (the actor's process died or the actor ended),
the channel probes again naming the lost socket, and the raylet answers once
it has dealt with the death: either the restarted worker's socket (calls
that were running are sent again if ``max_task_retries`` allows, or fail
with ActorDiedError) or "raylet" (dead: the raylet rejects the calls with
the actor's death reason).
"""
import collections
import itertools
import threading
import time

from rayx import protocol as p
from rayx import serialization
from rayx.exceptions import ACTOR_CALL_FORCE_CANCEL, ActorDiedError, TaskCancelledError
from rayx.object_ref import ObjectRef

PROBING = "probing"
DIRECT = "direct"
RAYLET = "raylet"

# A worker process holding CPUs that waits for direct results waits by itself
# while one arrives at least this often, then through the raylet (which hands
# its CPUs back meanwhile).
WORKER_LOCAL_WAIT = 0.005
REPROBE_DELAY = 0.05

ERROR_KIND = bytes((serialization.KIND_ERROR,))
_NO_VALUES = {}           # the argument values of a call without ref arguments (never mutated)
_thread_events = threading.local()     # one reusable Event per waiting thread


class DirectCall:
    """A call made directly, until its results arrive (or it moves to the raylet)."""

    __slots__ = ("spec", "keep", "values", "done", "waiters", "resolving", "lost", "escaped",
                 "cancelled", "sent", "expected")

    def __init__(self, spec, keep, values=None):
        self.spec = spec
        self.keep = keep          # ObjectRefs of its arguments, held until it is done
        self.values = values      # {object id: inline bytes | None (in the arena)} once resolved
        self.done = False         # answered, or handed to the raylet
        self.waiters = []         # Events of threads waiting in get
        self.resolving = False    # a wait for its arguments is out
        self.lost = False         # it was running when the connection broke
        self.escaped = False      # a ref to a result left the process: register the results
        self.cancelled = False    # rayx.cancel reached it while it ran (leased tasks)
        self.sent = 0.0           # when it was sent (leased tasks: how long functions run)
        self.expected = None      # leased tasks: seconds it should run (None: unknown or long)


def local_values(core, object_ids):
    """What this process can send of ``object_ids`` now: ({id: inline bytes, or None when
    the object is in the node's arena}, [ids not here], the bytes of the first one
    that is an error or None)."""
    values = core._values
    known_local = core._known_local
    resolved = {}
    missing = []
    for object_id in object_ids:
        data = values.get(object_id)
        if data is not None:
            if data[:1] == ERROR_KIND:
                return resolved, missing, data
            resolved[object_id] = data
        elif object_id in known_local:
            resolved[object_id] = None
        else:
            missing.append(object_id)
    return resolved, missing, None


def kept_arguments(spec):
    """ObjectRefs that keep a call's ref arguments alive until it is done (None if none)."""
    arg_refs = spec.arg_refs()
    nested = spec.nested_refs
    if not arg_refs and not nested:
        return None
    return [ObjectRef(oid) for oid in arg_refs] + [ObjectRef(oid) for oid in nested]


class DirectCalls:
    """The direct-call side of one process's core worker."""

    def __init__(self, core):
        self.core = core
        self.channels = {}
        self.pending = {}         # return object id -> DirectCall not answered yet
        self.unregistered = {}    # object id -> (data, size, is_error): results only we know of
        self._register = collections.deque()   # (object id, data, size, is_error) to register
        self._announce = collections.deque()   # results the worker registered: say we hold them
        self._lock = threading.Lock()
        # Seconds a wait for direct results stays here (None: no limit; a driver, or an
        # actor that holds no resources while alive, has nothing to hand back).
        self.local_wait_limit = None if core.mode == "driver" else WORKER_LOCAL_WAIT

    def submit(self, spec):
        channel = self.channels.get(spec.actor_id)
        if channel is None:
            with self._lock:
                channel = self.channels.get(spec.actor_id)
                if channel is None:
                    channel = self.channels[spec.actor_id] = ActorChannel(self, spec.actor_id)
        return channel.submit(spec)

    def complete(self, call, results):
        """Results of ``call`` arrived: cache them (while their refs are held) and wake waiters."""
        with self._lock:      # against escape() from another thread
            notify = self._store_results(call, results)
        if notify:
            self.core.conn._schedule_writer()
        self._finish(call)

    def _store_results(self, call, results):
        core = self.core
        pending = self.pending
        values = core._values
        notify = False
        for object_id, data, size, nested, is_error in results:
            held = pending.pop(object_id, None) is not None
            if data is None or nested:
                # Registered by the actor's worker: the raylet counts our ref from now on.
                self._announce.append((object_id, held))
                notify = True
                if not held:
                    continue
                if data is None:
                    core._known_local.add(object_id)
                else:
                    values[object_id] = data
                continue
            if call.escaped:
                self._register.append((object_id, data, size, is_error))
                notify = True
            if held:
                values[object_id] = data
                if not call.escaped:
                    self.unregistered[object_id] = (data, size, is_error)
        return notify

    def fail(self, call, error):
        """``call`` ends with ``error`` as the value of each of its returns."""
        data = serialization.serialize_error(error).to_bytes()
        self.complete(call, [(oid, data, len(data), (), True) for oid in call.spec.return_ids()])

    def send_via_raylet(self, call):
        """``call`` (its spec ready to submit) goes through the raylet after all."""
        spec = call.spec
        self.escape_all(spec.arg_refs())
        conn = self.core.conn
        # Under the lock of ``outgoing``: a drop it hides from the next flush (the
        # call was pending) is seen here, and one it does not hide goes out after
        # the SUBMIT (queued before the flush takes the queue).
        with self._lock:
            dropped = [oid for oid in spec.return_ids() if oid not in self.pending]
            conn.defer((p.SUBMIT, spec))
            if dropped:
                # The caller dropped these refs while the call waited here; the SUBMIT
                # makes the raylet count a ref for us, so drop it again.
                conn.defer((p.REFS, (), dropped))
            # The SUBMIT goes out before the drops of the kept argument refs, so the
            # raylet holds the arguments first.
            self.moved(call)
        conn.push()

    def track(self, call):
        """Refs to the returns of ``call``, which is now awaited here. Counted at once
        (no +1 event), so a drop before the next flush still reaches ``outgoing``,
        which then forgets the result."""
        object_ids = call.spec.return_ids()
        pending = self.pending
        for object_id in object_ids:
            pending[object_id] = call
        return self.core.refs.refs_registered_by_message(object_ids)

    def moved(self, call):
        """``call`` now goes through the raylet: waiters look there."""
        pending = self.pending
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

    def has_registrations(self):
        return bool(self._register or self._announce)

    def escape(self, object_id):
        """A ref to ``object_id`` leaves this process (or is waited on through the raylet):
        if the raylet does not know the object, register it (now, or when it arrives)."""
        with self._lock:
            call = self.pending.get(object_id)
            if call is not None:
                call.escaped = True
                return
            entry = self.unregistered.pop(object_id, None)
            if entry is None:
                return
            self._register.append((object_id, *entry))
        self.core.conn._schedule_writer()

    def escape_all(self, object_ids):
        if self.pending or self.unregistered:
            for object_id in object_ids:
                self.escape(object_id)

    def outgoing(self, added, removed, counts):
        """Part of every flush to the raylet, given the ref changes just drained: hides
        refs to results the raylet does not know, and returns the messages that must
        precede the rest (registrations). Returns (messages, added, removed)."""
        with self._lock:
            added, removed = self._hide_unregistered(added, removed)
        messages = []
        if self._register or self._announce:
            self._registrations(messages, counts)
        return messages, added, removed

    def _hide_unregistered(self, added, removed):
        pending = self.pending
        unregistered = self.unregistered
        if pending or unregistered:
            if added:
                added = [oid for oid in added if oid not in pending and oid not in unregistered]
            if removed:
                kept = []
                values = self.core._values
                for object_id in removed:
                    if object_id in pending:
                        del pending[object_id]           # its result will be dropped on arrival
                    elif object_id in unregistered:
                        del unregistered[object_id]
                        values.pop(object_id, None)
                    else:
                        kept.append(object_id)
                removed = kept
        return added, removed

    def _registrations(self, messages, counts):
        """PUTs of escaped results (each makes us a holder), and our refs to results the
        raylet knows now; the ones nobody here holds any more are dropped again."""
        held = []
        released = []
        register = self._register
        while register:
            object_id, data, size, is_error = register.popleft()
            messages.append((p.PUT, object_id, data, size, (), is_error))
            if object_id not in counts:
                released.append(object_id)
        announce = self._announce
        while announce:
            object_id, was_held = announce.popleft()
            if was_held and object_id in counts:
                held.append(object_id)
            else:
                released.append(object_id)    # nobody here holds it: let the raylet free it
        if held:
            messages.append((p.REFS, held, ()))
        if released:
            messages.append((p.REFS, released, released))

    # ------------------------------------------------------------ waiting

    def wait(self, object_ids, timeout):
        """Wait (up to ``timeout``) for the direct calls producing ``object_ids`` (see
        ``_wait_calls``); the rest is awaited through the raylet. Returns the ids still missing."""
        pending = self.pending
        calls = {}
        for object_id in object_ids:
            call = pending.get(object_id)
            if call is not None:
                calls[id(call)] = call
        calls = list(calls.values())
        if calls:
            self._wait_calls(calls, timeout)
        values = self.core._values
        known_local = self.core._known_local
        missing = [oid for oid in object_ids if oid not in values and oid not in known_local]
        self.escape_all(missing)          # the rest is awaited through the raylet
        return missing

    def wait_some(self, object_ids, num_ready, timeout):
        """Wait (up to ``timeout``; a worker process holding CPUs only while results keep
        coming) until ``num_ready`` of the direct calls making ``object_ids`` are done.
        True if every id was made by a direct call still pending (else nothing is
        awaited here)."""
        pending = self.pending
        calls = {}
        for object_id in object_ids:
            call = pending.get(object_id)
            if call is None:
                return False
            calls[id(call)] = call
        self._wait_calls(list(calls.values()), timeout, num_ready)
        return True

    def _wait_calls(self, calls, timeout, count=None):
        """Wait until ``count`` (default: all) of ``calls`` are done, or ``timeout`` passes.

        A process holding CPUs (a task's worker, an actor that keeps CPUs) gives up
        after ``local_wait_limit`` without a result arriving, and waits through the
        raylet, which hands its CPUs back: what it waits for may need them."""
        event = getattr(_thread_events, "event", None)
        if event is None:
            event = _thread_events.event = threading.Event()
        event.clear()
        for call in calls:
            call.waiters.append(event)
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        idle_limit = self.local_wait_limit
        conn = self.core.conn
        if conn._dirty:
            conn.flush_peers()      # our calls may still wait for the writer thread
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

    def cancel(self, task_id, force):
        """rayx.cancel of an actor call made here; False if none of our channels has it."""
        return any(channel.cancel(task_id, force) for channel in list(self.channels.values()))

    def close(self):
        for channel in list(self.channels.values()):
            channel.closed = True

def _count_done(calls, enough):
    """How many of ``calls`` are done, counting no further than ``enough``."""
    done = 0
    for call in calls:
        if call.done:
            done += 1
            if done >= enough:
                break
    return done


class ActorChannel:
    """This process's calls to one actor (see the module's docstring)."""

    def __init__(self, calls, actor_id):
        self.calls = calls
        self.core = calls.core
        self.actor_id = actor_id
        self.lock = threading.RLock()
        self.mode = None
        self.queue = collections.deque()   # calls not sent yet, in order
        self.inflight = {}                 # task id -> call sent on the connection
        self.peer = None
        self.path = ""
        self.raylet_seq = itertools.count(1)
        self.closed = False

    # ------------------------------------------------------------ submit

    def submit(self, spec):
        core = self.core
        if self.mode == RAYLET:
            with self.lock:
                if self.mode == RAYLET:
                    spec.sequence_number = next(self.raylet_seq)
                    return core.submit_task(spec)
        keep = kept_arguments(spec)
        # Without ref arguments there is nothing to resolve before sending.
        call = DirectCall(spec, keep, None if keep else _NO_VALUES)
        refs = self.calls.track(call)
        with self.lock:
            if self.mode == RAYLET:
                self._send_via_raylet(call)
            else:
                self.queue.append(call)
                if self.mode is None:
                    self._probe("")
                elif self.mode == DIRECT:
                    self._pump()
        return refs

    def _pump(self):
        """Send the calls at the head of the queue whose arguments are local (lock held)."""
        queue = self.queue
        peer = self.peer
        inflight = self.inflight
        while queue:
            call = queue[0]
            if call.values is None and not self._resolve(call):
                return
            queue.popleft()
            if call.done:
                continue           # failed without running (an argument is an error)
            spec = call.spec
            inflight[spec.task_id] = call
            peer.send((p.DIRECT_CALL, spec, call.values))

    def _resolve(self, call):
        """Fill ``call.values`` if every ref argument is local; else ask the raylet to tell
        us when they are (and return False)."""
        core = self.core
        resolved, missing, error = local_values(core, call.spec.arg_refs())
        if error is not None:
            # An argument is an error: the call fails with it, without running.
            self.calls.complete(call, [(oid, error, len(error), (), True)
                                       for oid in call.spec.return_ids()])
            return True
        if not missing:
            call.values = resolved
            return True
        if not call.resolving:
            call.resolving = True
            self.calls.escape_all(missing)
            core.wait_async(missing, lambda ok: self._arguments_ready(call))
        return False

    def _arguments_ready(self, call):
        with self.lock:
            call.resolving = False
            if self.mode == DIRECT and self.queue and self.queue[0] is call:
                self._pump()

    def _send_via_raylet(self, call):
        call.spec.sequence_number = next(self.raylet_seq)
        self.calls.send_via_raylet(call)

    # --------------------------------------------------- probe and break

    def _probe(self, broken_path):
        self.mode = PROBING
        self.core.request_async("actor_direct", (self.actor_id, self.core.worker_id, broken_path),
                                lambda ok, answer: self._probe_answered(ok, answer, broken_path))

    def _probe_answered(self, ok, answer, broken_path):
        if self.closed:
            return
        with self.lock:
            if ok and answer[0] == DIRECT:
                try:
                    self.peer = self.core.conn.connect_peer(answer[1], self._on_message, self._on_break)
                except OSError:
                    # Gone already: ask again shortly, once the raylet has seen it.
                    self.mode = PROBING
                    timer = threading.Timer(REPROBE_DELAY, self._reprobe, (answer[1],))
                    timer.daemon = True
                    timer.start()
                    return
                self.path = answer[1]
                self.mode = DIRECT
                self._retry_lost()
                self._pump()
                return
            self.mode = RAYLET
            queue, self.queue = self.queue, collections.deque()
            for call in queue:
                if call.lost:
                    call.spec.attempt += 1
                if not call.done:
                    self._send_via_raylet(call)

    def _reprobe(self, broken_path):
        with self.lock:
            if not self.closed and self.mode == PROBING:
                self._probe(broken_path)

    def _retry_lost(self):
        """Calls that were running when the actor's process died: again if allowed."""
        for call in self.queue:
            if not call.lost:
                continue
            call.lost = False
            spec = call.spec
            if spec.take_retry():
                continue
            self.calls.fail(call, ActorDiedError(
                f"The actor {spec.function_name.rpartition('.')[0]} died while running "
                f"{spec.function_name}; its max_task_retries ({spec.max_retries}) does not allow "
                f"retrying the call.", actor_id=self.actor_id.hex()))

    # ------------------------------------------------------------ cancel

    def cancel(self, task_id, force):
        """A call not sent yet is dropped (TaskCancelledError); a running one is told to
        the actor's worker (which cancels it if the actor is async). False if this
        channel never held it (or it went through the raylet)."""
        with self.lock:
            call = next((c for c in self.queue if c.spec.task_id == task_id), None)
            running = call is None and task_id in self.inflight
            if call is None and not running:
                return False
            if force:
                raise ValueError(ACTOR_CALL_FORCE_CANCEL)
            if running:
                self.peer.send_now((p.DIRECT_CANCEL, task_id, False))
                return True
            self.queue.remove(call)
            self.calls.fail(call, TaskCancelledError.before_it_ran(call.spec))
            if self.mode == DIRECT:
                self._pump()       # it may have held up the calls behind it
        return True

    def _on_message(self, peer, message):
        if message[0] != p.DIRECT_DONE:
            return
        call = self.inflight.pop(message[1], None)
        if call is not None:
            self.calls.complete(call, message[2])

    def _on_break(self, peer):
        if self.closed or self.core._closed:
            return
        with self.lock:
            if peer is not self.peer:
                return
            self.peer = None
            lost = list(self.inflight.values())
            self.inflight.clear()
            for call in reversed(lost):
                call.lost = True
                self.queue.appendleft(call)
            self._probe(self.path)
