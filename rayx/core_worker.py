"""The runtime inside every driver and worker process: submitting tasks, putting
and getting objects, and keeping the raylet informed of the refs this process
holds.

One CoreWorker per process. It talks to its node's raylet over the Unix socket
(``rayx.protocol.RayletConnection``), reads and writes large objects straight
from and into the node's shared-memory arena, and reads the function table
from the GCS. Small objects this process put or fetched are cached here as
serialized bytes for as long as it holds a ref to them.
"""
import hashlib
import contextvars
import itertools
import operator
import os
import sys
import threading
import time

from rayx import protocol as p
from rayx import serialization
from rayx.direct_calls import DirectCalls
from rayx.task_leases import TaskLeases
from rayx._core.codec import NORMAL_TASK
from rayx._core.ids import JobID, ObjectID, TaskID
from rayx.exceptions import (ArenaError, GetTimeoutError, ObjectExistsError, ObjectLostError,
                             ObjectStoreFullError, RaySystemError)
from rayx import object_ref as object_ref_module
from rayx.object_ref import LocalRefCounter, ObjectRef

INLINE_THRESHOLD = 100 * 1024
STORE_FULL_TIMEOUT = 10.0
TIMED_OUT_WAIT_FOLLOW_UP = 1.0   # seconds a timed-out wait asks the raylet what is ready


_object_id_of = operator.attrgetter("_id")


class TaskContext:
    """What the current task is: ids of the tasks and objects it creates derive from it.

    Kept in a context variable, so every thread and every asyncio task of an
    actor has its own (a driver's threads share the driver's).
    """

    __slots__ = ("task_id", "task_name", "job_id", "actor_id", "submit_counter", "put_counter")

    def __init__(self, task_id=None, task_name=None, job_id=None, actor_id=b""):
        self.task_id = task_id
        self.task_name = task_name
        self.job_id = job_id
        self.actor_id = actor_id
        self.submit_counter = 0
        self.put_counter = 0


_current_context = contextvars.ContextVar("rayx_task_context", default=None)


class _Pending:
    """A request sent to the raylet whose reply someone waits for."""

    __slots__ = ("event", "ok", "result", "callback")

    def __init__(self, callback=None):
        self.event = threading.Event()
        self.ok = True
        self.result = None
        self.callback = callback


class CoreWorker:
    def __init__(self, mode, socket_path, gcs, job_id, worker_id, job_info=None, on_execute=None):
        self.mode = mode
        self.inline_threshold = INLINE_THRESHOLD
        self.gcs = gcs
        self.job_id = job_id
        self.worker_id = worker_id
        self.refs = LocalRefCounter()
        self.refs.install()
        self._default_context = TaskContext(
            TaskID.for_driver(JobID(job_id)) if mode == "driver" else None, None, job_id)
        self._requests = {}
        self._request_ids = itertools.count(1)
        self._values = {}
        self._known_local = set()    # ids of objects known to be on this node (while held)
        self._actor_seqs = {}
        self._seq_lock = threading.Lock()
        self._functions = {}
        self._exported = set()
        self._jobs_prepared = set()
        self._registered = threading.Event()
        self._closed = False
        self.node_info = None
        self.on_execute = on_execute
        self.on_cancel = None        # worker: rayx.cancel of a task this worker has
        self.executor = None         # worker: its Executor
        self.on_block = None         # worker: called before a get that may block, and after
        self.on_unblock = None
        self.direct = DirectCalls(self)
        self.leases = TaskLeases(self.direct)
        object_ref_module.set_escape_hook(self.direct.escape)
        self.conn = p.RayletConnection(socket_path, self._on_message, self._on_close, self._before_flush)
        self.conn.start()
        self.conn.send_now((p.REGISTER, mode, worker_id, os.getpid(), job_id, job_info or {}))
        if not self.conn.wait_for(self._registered, 60):
            raise RaySystemError(f"the raylet at {socket_path} did not answer the registration")
        from rayx._core.store import Arena
        self.arena = Arena.attach(self.node_info["arena_path"])
        self.node_id = self.node_info["node_id"]

    # --------------------------------------------------------- connection

    def _on_message(self, message):
        tag = message[0]
        if tag == p.WAIT_REPLY or tag == p.REPLY:
            pending = self._requests.pop(message[1], None)
            if pending is None:
                return
            if tag == p.WAIT_REPLY:
                pending.result = message[2]
            else:
                pending.ok, pending.result = message[2], message[3]
            if pending.callback is not None:
                pending.callback(pending)
            pending.event.set()
        elif tag == p.EXECUTE:
            self.on_execute(message)
        elif tag == p.LOG:
            stream = sys.stderr if message[1] == 2 else sys.stdout
            try:
                print(message[2], file=stream, flush=True)
            except Exception:
                pass
        elif tag == p.REGISTERED:
            self.node_info = message[1]
            self._registered.set()
        elif tag == p.EXIT:
            if self.on_execute is not None:
                self.on_execute(message)
        elif tag == p.READY_NOTE:
            self._known_local.add(message[1])
        elif tag == p.CANCEL:
            if self.on_cancel is not None:
                self.on_cancel(message[1])

    def _on_close(self):
        self._closed = True
        for pending in list(self._requests.values()):
            pending.ok = False
            pending.result = "the connection to the raylet closed"
            pending.event.set()
        if self.on_execute is not None:
            self.on_execute((p.EXIT, "the raylet closed the connection"))

    def _before_flush(self):
        """Reference-count updates around the messages about to be written: (messages
        before them: new holds, registrations; after them: drops). None if there are none."""
        added, removed = self.refs.drain()
        direct = self.direct
        if direct.pending or direct.unregistered or direct.has_registrations():
            first, added, removed = direct.outgoing(added, removed, self.refs.counts)
        else:
            first = None
        if not added and not removed and not first:
            return None
        head = [(p.REFS, added, ())] if added else []
        if first:
            head.extend(first)
        if not removed:
            return head, []
        values = self._values
        known = self._known_local
        for object_id in removed:
            values.pop(object_id, None)
            known.discard(object_id)
        return head, [(p.REFS, (), removed)]

    def request(self, op, *args, timeout=60):
        """A control call to the raylet; returns its result or raises."""
        request_id = next(self._request_ids)
        pending = self._requests[request_id] = _Pending()
        self.conn.send_now((p.REQUEST, request_id, op, args))
        if not self.conn.wait_for(pending.event, timeout):
            self._requests.pop(request_id, None)
            raise GetTimeoutError(f"the raylet did not answer {op!r} within {timeout} s")
        if not pending.ok:
            raise RaySystemError(f"{op} failed: {pending.result}")
        return pending.result

    def request_async(self, op, args, callback):
        """A control call whose answer goes to ``callback(ok, result)`` (in a reading thread)."""
        request_id = next(self._request_ids)
        self._requests[request_id] = _Pending(
            callback=lambda pending: callback(pending.ok, pending.result))
        self.conn.send((p.REQUEST, request_id, op, args))

    def wait_async(self, object_ids, callback):
        """Fetch ``object_ids`` to this node; then note where their bytes are (this process
        must hold refs to them) and call ``callback(ok)`` (in a reading thread)."""
        def arrived(pending):
            if pending.ok:
                values = self._values
                known = self._known_local
                for object_id, data, in_arena in pending.result:
                    if in_arena:
                        known.add(object_id)
                    else:
                        values[object_id] = data
            callback(pending.ok)

        request_id = next(self._request_ids)
        self._requests[request_id] = _Pending(callback=arrived)
        self.conn.send((p.WAIT, request_id, object_ids, len(set(object_ids)), True))

    def shutdown(self):
        if self._closed:
            return
        self.leases.close()
        self.direct.close()
        if object_ref_module.escape_hook() == self.direct.escape:
            object_ref_module.set_escape_hook(None)
        self.refs.uninstall()
        self.conn.close()
        self.arena.close()   # unmaps once no buffer of it is left (a remote class may keep self)
        self._closed = True

    # -------------------------------------------------------------- ids

    def current_task_id(self):
        return self.context.task_id

    @property
    def context(self):
        return _current_context.get() or self._default_context

    @staticmethod
    def enter_task(task_id, task_name, job_id, actor_id=b""):
        """Make this thread (or asyncio task) run as the given task."""
        _current_context.set(TaskContext(task_id, task_name, job_id, actor_id))

    @staticmethod
    def leave_task():
        _current_context.set(None)

    def current_job_id(self):
        return self.context.job_id

    def next_task_id(self):
        ctx = self.context
        ctx.submit_counter += 1
        return TaskID.for_child(ctx.task_id, ctx.submit_counter).binary()

    def new_put_id(self):
        ctx = self.context
        ctx.put_counter += 1
        return ObjectID.for_put(ctx.task_id, ctx.put_counter).binary()

    # -------------------------------------------------------- functions

    def export_function(self, blob):
        """Store a pickled function or class in the GCS once; return its id."""
        function_id = hashlib.sha1(blob).digest()
        if function_id not in self._exported:
            self.gcs.put_if_absent("functions", function_id, blob)
            self._exported.add(function_id)
        return function_id

    def load_function(self, function_id, job_id):
        fn = self._functions.get(function_id)
        if fn is None:
            self.prepare_job(job_id)
            blob = self.gcs.get("functions", function_id)
            if blob is None:
                raise RaySystemError(f"function {function_id.hex()} is not in the GCS function table")
            fn = self._functions[function_id] = serialization.loads_function(blob)
        return fn

    def prepare_job(self, job_id):
        """Make the driver's import paths visible here before running its code."""
        if job_id in self._jobs_prepared:
            return
        self._jobs_prepared.add(job_id)
        blob = self.gcs.get("jobs", job_id)
        if not blob:
            return
        from rayx._core import codec
        info = codec.loads(blob)
        for path in reversed(info.get("sys_path", [])):
            if path not in sys.path:
                sys.path.insert(1, path)

    # -------------------------------------------------------- tasks

    def next_actor_sequence(self, actor_id):
        """The next per-caller sequence number for calls to ``actor_id`` (1, 2, ...)."""
        counter = self._actor_seqs.get(actor_id)
        if counter is None:
            with self._seq_lock:
                counter = self._actor_seqs.setdefault(actor_id, itertools.count(1))
        return next(counter)   # atomic under the GIL

    def submit_task(self, spec):
        """A task (or actor creation): to a leased worker when it can, else to the raylet."""
        if spec.task_type == NORMAL_TASK:
            refs = self.leases.submit(spec)
            if refs is not None:
                return refs
        if self.direct.pending or self.direct.unregistered:
            self.direct.escape_all(spec.arg_refs())
        refs = self.refs.refs_registered_by_message(spec.return_ids())
        self.conn.send((p.SUBMIT, spec))
        return refs

    def cancel_task(self, task_id, force):
        """rayx.cancel: a leased task or direct actor call is cancelled here, others by
        the raylet."""
        if self.leases.cancel(task_id, force) or self.direct.cancel(task_id, force):
            return
        refused = self.request("cancel", task_id, force)
        if isinstance(refused, str):
            raise ValueError(refused)

    def submit_actor_call(self, spec):
        """An actor call: directly to the actor's worker when it lives on this node."""
        return self.direct.submit(spec)

    # ------------------------------------------------------------ put

    def put(self, value):
        return self.put_serialized(serialization.serialize(value))

    def put_serialized(self, sobj, cache=True):
        """Store ``sobj`` under a new put id; its ref. The PUT registers this process as
        a holder (as a SUBMIT does for its returns), so the drop of the ref always
        reaches the raylet, even when it follows within the same flush."""
        object_id = self.new_put_id()
        ref = self.refs.ref_registered_by_message(object_id)
        self.store(object_id, sobj, p.PUT, cache)
        return ref

    def store(self, object_id, sobj, tag=None, cache=True):
        """Make a serialized object available: inline bytes or a sealed arena object.

        With ``tag`` (PUT) the raylet is told at once (and counts this process as a
        holder: see ``put_serialized``); otherwise the caller reports it (a task's
        results travel in its TASK_DONE).
        Returns (object_id, data or None, size, nested refs).
        """
        if sobj.size <= INLINE_THRESHOLD:
            data = sobj.to_bytes()
            if cache:
                self._values[object_id] = data
        else:
            data = None
            self._write_arena(object_id, sobj)
        if tag is not None:
            self.conn.send((tag, object_id, data, sobj.size, sobj.nested_refs))
        return object_id, data, sobj.size, sobj.nested_refs

    def _write_arena(self, object_id, sobj):
        arena = self.arena
        try:
            view = self._create_in_arena(object_id, sobj.size)
        except ObjectExistsError:
            if arena.contains(object_id):
                return  # a re-executed task made the same object again
            try:
                arena.abort(object_id)   # an unsealed leftover of a crashed attempt
            except ArenaError:
                return                   # sealed, deleted, still pinned: the same bytes
            view = self._create_in_arena(object_id, sobj.size)
        try:
            sobj.write_into(view)
        except BaseException:
            del view
            arena.abort(object_id)
            raise
        del view
        arena.seal(object_id)

    def _create_in_arena(self, object_id, size):
        """create_object, waiting (up to STORE_FULL_TIMEOUT) for the raylet to make room."""
        deadline = None
        while True:
            try:
                return self.arena.create_object(object_id, size)
            except ObjectStoreFullError:
                if size > self.arena.capacity:
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + STORE_FULL_TIMEOUT
                elif now > deadline:
                    raise
                # Sends our dropped refs first (same socket, in order), so the raylet
                # frees what nobody refers to before it answers.
                self.request("make_room", size)
                time.sleep(0.005)

    # ------------------------------------------------------------ get

    def get(self, refs, timeout=None):
        """Values of ``refs`` (a list of ObjectRefs), in order; raises the first error."""
        object_ids = [ref.binary() for ref in refs]
        values = self._values
        missing = [oid for oid in object_ids if oid not in values]
        located = {}
        raylet_timeout = timeout
        if missing and self.direct.pending:
            start = time.monotonic()
            missing = self.direct.wait(missing, timeout)
            if timeout is not None:
                raylet_timeout = max(0.0, timeout - (time.monotonic() - start))
        if missing:
            reply = self._wait_raylet(missing, len(set(missing)), True, raylet_timeout)
            if reply is None:
                raise GetTimeoutError(f"get timed out after {timeout} s waiting for "
                                      f"{len(missing)} object(s), e.g. {missing[0].hex()}")
            for object_id, data, in_arena in reply:
                if in_arena:
                    located[object_id] = None
                else:
                    values[object_id] = data
                    located[object_id] = data
        results = []
        for object_id in object_ids:
            data = values.get(object_id)
            if data is None:
                data = located.get(object_id)
            if data is None:
                data = self.arena.get(object_id)
                if data is None:
                    data = self._restore(object_id, timeout)
            value = serialization.deserialize(data)
            if type(value) is serialization.ErrorValue:
                raise value.error
            results.append(value)
        return results

    def _restore(self, object_id, timeout):
        """An object known to be local is not in the arena (spilled): the raylet brings it back."""
        reply = self._wait_raylet([object_id], 1, True, timeout)
        if reply:
            _, data, in_arena = reply[0]
            if in_arena:
                data = self.arena.get(object_id)
            if data is not None:
                return data
        raise ObjectLostError(object_id.hex())

    def wait(self, refs, num_returns, timeout, fetch_local=True, object_ids=None):
        """(ready, not ready) refs in input order. Set operations, not per-ref Python
        loops, so that waiting repeatedly on a long list stays cheap."""
        if object_ids is None:
            object_ids = list(map(_object_id_of, refs))
        known = self._known_local
        values = self._values
        found = self._first_ready(refs, object_ids, num_returns)
        if found is not None:
            return found
        ready = known.intersection(object_ids)
        ready.update(filter(values.__contains__, object_ids))
        if len(ready) < num_returns and self.direct.pending:
            # Made by direct calls (leased tasks, actor calls): their results come here.
            rest = [oid for oid in object_ids if oid not in ready]
            start = time.monotonic()
            if self.direct.wait_some(rest, num_returns - len(ready), timeout):
                ready.update(known.intersection(rest))
                ready.update(filter(values.__contains__, rest))
                if timeout is not None:
                    timeout = max(0.0, timeout - (time.monotonic() - start))
        if len(ready) < num_returns:
            rest = [oid for oid in object_ids if oid not in ready]
            self.direct.escape_all(rest)
            reply = self._wait_raylet(rest, num_returns - len(ready), False, timeout, fetch_local,
                                      notify=fetch_local)
            if reply is None:
                # Timed out: which are ready now (answered at once; bounded all the same).
                reply = self._wait_raylet(rest, 0, False, TIMED_OUT_WAIT_FOLLOW_UP, fetch_local) or []
            arrived = [object_id for object_id, _, _ in reply]
            ready.update(arrived)
            if fetch_local:
                # The raylet reports every requested object that is ready; remember them
                # (while we hold refs) so the next wait on the rest needs no round trip.
                known.update(arrived)
        ready_refs = []
        not_ready = []
        for position, ref in enumerate(refs):
            if ref._id in ready:
                ready_refs.append(ref)
                if len(ready_refs) == num_returns:
                    not_ready.extend(refs[position + 1:])
                    break
            else:
                not_ready.append(ref)
        return ready_refs, not_ready

    def _first_ready(self, refs, object_ids, num_returns):
        """(ready, not ready) when the first ``num_returns`` ready refs are known here
        already, else None. Looks down the list only as far as it must (results mostly
        arrive in the order they were asked for), so waiting down a long list one
        ref at a time stays cheap."""
        values = self._values
        known = self._known_local
        positions = []
        for position, object_id in enumerate(object_ids):
            if object_id in values or object_id in known:
                positions.append(position)
                if len(positions) == num_returns:
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

    def _wait_raylet(self, object_ids, num_ready, with_data, timeout, fetch=True, notify=False):
        request_id = next(self._request_ids)
        pending = self._requests[request_id] = _Pending()
        blocking = self.on_block is not None and num_ready > 0
        if blocking:
            self.on_block()
        try:
            self.conn.send_now((p.WAIT, request_id, object_ids, num_ready, with_data, fetch, notify))
            if not self.conn.wait_for(pending.event, timeout):
                self._requests.pop(request_id, None)
                self.conn.send_now((p.CANCEL_WAIT, request_id))
                return None
        finally:
            if blocking:
                self.on_unblock()
        if not pending.ok:
            raise RaySystemError(pending.result)
        return pending.result

    def future_of(self, ref):
        """A concurrent.futures.Future resolved with the value of ``ref``."""
        import concurrent.futures
        future = concurrent.futures.Future()

        def resolve(pending):
            try:
                future.set_result(self.get([ref])[0])
            except BaseException as exc:
                future.set_exception(exc)

        object_id = ref.binary()
        if object_id in self._values:
            resolve(None)
            return future
        self.direct.escape_all([object_id])
        request_id = next(self._request_ids)
        self._requests[request_id] = _Pending(
            callback=lambda pending: threading.Thread(target=resolve, args=(pending,), daemon=True).start())
        self.conn.send_now((p.WAIT, request_id, [object_id], 1, False))
        return future
