"""The runtime inside every driver and worker process: submitting tasks, putting
and getting objects, and keeping the raylet informed of the refs this process
holds.

One CoreWorker per process. It talks to its node's raylet over the Unix socket
(``rayx.runtime.transport.RayletConnection``; requests and their replies in
``rayx.runtime.raylet_requests``), reads and writes large objects straight
from and into the node's shared-memory arena, and keeps the bytes of the small
objects it holds refs to (``rayx.runtime.object_cache``). Work it pushes to
other workers of the node goes through ``rayx.runtime.actor_calls`` (actor
calls) and ``rayx.runtime.leased_tasks`` (normal tasks), whose results
``rayx.runtime.pushed_calls`` keeps.
"""
import itertools
import operator
import os
import sys
import threading
import time

from rayx import messages
from rayx import object_ref as object_ref_module
from rayx._core.codec import NORMAL_TASK
from rayx._core.ids import JobID, ObjectID, TaskID
from rayx.exceptions import (ArenaError, GetTimeoutError, ObjectExistsError, ObjectLostError,
                             ObjectStoreFullError, RaySystemError)
from rayx.object_ref import LocalRefCounter
from rayx.runtime import serialization, task_context
from rayx.runtime.actor_calls import ActorCalls
from rayx.runtime.functions import FunctionTable
from rayx.runtime.leased_tasks import LeasedTasks
from rayx.runtime.object_cache import ObjectCache
from rayx.runtime.pushed_calls import PushedCalls
from rayx.runtime.raylet_requests import RayletRequests
from rayx.runtime.task_context import TaskContext
from rayx.runtime.transport import RayletConnection

INLINE_THRESHOLD = 100 * 1024
STORE_FULL_TIMEOUT = 10.0
TIMED_OUT_WAIT_FOLLOW_UP = 1.0   # seconds a timed-out wait asks the raylet what is ready

# Hot path: built inline with the declaration's tag (tests/test_messages.py checks
# every such tuple against its declaration).
_SUBMIT_TAG = messages.SUBMIT.tag
_PUT_TAG = messages.PUT.tag
_REFS = messages.REFS
_object_id_of = operator.attrgetter("_id")


class CoreWorker:
    """The runtime of one driver or worker process (see the module's docstring).

    ``executor``: a worker's Executor, which gets the work the raylet sends
    (EXECUTE, EXIT, CANCEL) and is told before this process blocks in a wait.
    """

    def __init__(self, mode, socket_path, gcs, job_id, worker_id, job_info=None, executor=None):
        self.mode = mode
        self.inline_threshold = INLINE_THRESHOLD
        self.gcs = gcs
        self.job_id = job_id
        self.worker_id = worker_id
        self.executor = executor
        self.refs = LocalRefCounter()
        self.refs.install()
        self.cache = ObjectCache()
        self.functions = FunctionTable(gcs)
        self._default_context = TaskContext(
            TaskID.for_driver(JobID(job_id)) if mode == "driver" else None, None, job_id)
        self._actor_seqs = {}
        self._seq_lock = threading.Lock()
        self._registered = threading.Event()
        self._closed = False
        self.node_info = None
        self.conn = RayletConnection(socket_path, self._on_close, self._before_flush)
        self.requests = RayletRequests(self.conn, *(
            (executor.before_blocking, executor.after_blocking) if executor is not None else ()))
        self.pushed = PushedCalls(self.cache, self.refs, self.conn, mode == "driver")
        self.actor_calls = ActorCalls(self)
        self.leases = LeasedTasks(self)
        object_ref_module.set_escape_hook(self.pushed.escape)
        self.conn.start(self.raylet_handlers(executor))
        self.conn.send_now(messages.REGISTER(mode, worker_id, os.getpid(), job_id, job_info or {}))
        if not self.conn.wait_for(self._registered, 60):
            raise RaySystemError(f"the raylet at {socket_path} did not answer the registration")
        from rayx._core.store import Arena
        self.arena = Arena.attach(self.node_info["arena_path"])
        self.node_id = self.node_info["node_id"]

    # --------------------------------------------------------- connection

    def raylet_handlers(self, executor=None):
        """What the raylet sends this process, and who handles it (a worker's
        ``executor`` takes its work)."""
        table = {
            messages.REGISTERED: self._on_registered,
            messages.REPLY: self.requests.on_reply,
            messages.WAIT_REPLY: self.requests.on_wait_reply,
            messages.LOG: self._on_log,
            messages.READY_NOTE: self.cache.on_node,
        }
        if executor is not None:
            table.update({messages.EXECUTE: executor.on_execute, messages.EXIT: executor.on_exit,
                          messages.CANCEL: executor.on_cancel})
        return messages.handlers(table)

    def _on_registered(self, info):
        self.node_info = info
        self._registered.set()

    @staticmethod
    def _on_log(stream, text):
        try:
            print(text, file=sys.stderr if stream == 2 else sys.stdout, flush=True)
        except Exception:
            pass

    def _on_close(self):
        self._closed = True
        self.requests.fail_all("the connection to the raylet closed")
        if self.executor is not None:
            self.executor.on_exit("the raylet closed the connection")

    @property
    def closed(self):
        return self._closed

    def _before_flush(self):
        """Reference-count updates around the messages about to be written: (messages
        before them: new holds, registrations; after them: drops). None if there are none."""
        added, removed = self.refs.drain()
        first, added, removed = self.pushed.outgoing(added, removed)
        if not added and not removed and not first:
            return None
        head = [_REFS(added, ())] if added else []
        if first:
            head.extend(first)
        if not removed:
            return head, []
        self.cache.forget_all(removed)
        return head, [_REFS((), removed)]

    def request(self, op, *args, timeout=60):
        """A control call to the raylet; returns its result or raises."""
        return self.requests.call(op, *args, timeout=timeout)

    def fetch_async(self, object_ids, callback):
        """Fetch ``object_ids`` to this node; then note where their bytes are (this process
        must hold refs to them) and call ``callback(ok)`` (in a reading thread)."""
        def arrived(pending):
            if pending.ok:
                note = self.cache.arrived
                for object_id, data, in_arena in pending.result:
                    note(object_id, data, in_arena)
            callback(pending.ok)

        self.requests.wait_async(object_ids, len(set(object_ids)), True, arrived)

    def shutdown(self):
        if self._closed:
            return
        self.leases.close()
        self.actor_calls.close()
        if object_ref_module.escape_hook() == self.pushed.escape:
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
        return task_context.current() or self._default_context

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
        self.pushed.escape_args(spec)
        refs = self.refs.refs_registered_by_message(spec.return_ids())
        self.conn.send((_SUBMIT_TAG, spec))
        return refs

    def cancel_task(self, task_id, force):
        """rayx.cancel: a leased task or an actor call pushed from here is cancelled here,
        others by the raylet."""
        if self.leases.cancel(task_id, force) or self.actor_calls.cancel(task_id, force):
            return
        refused = self.request("cancel", task_id, force)
        if isinstance(refused, str):
            raise ValueError(refused)

    def submit_actor_call(self, spec):
        """An actor call: pushed to the actor's worker when it lives on this node."""
        return self.actor_calls.submit(spec)

    # ------------------------------------------------------------ put

    def put(self, value):
        return self.put_serialized(serialization.serialize(value))

    def put_serialized(self, sobj, cache=True):
        """Store ``sobj`` under a new put id; its ref. The PUT registers this process as
        a holder (as a SUBMIT does for its returns), so the drop of the ref always
        reaches the raylet, even when it follows within the same flush."""
        object_id = self.new_put_id()
        ref = self.refs.ref_registered_by_message(object_id)
        self.store(object_id, sobj, True, cache)
        return ref

    def store(self, object_id, sobj, tell_raylet=False, cache=True):
        """Make a serialized object available: inline bytes or a sealed arena object.

        With ``tell_raylet`` the raylet is told at once (a PUT, which counts this
        process as a holder: see ``put_serialized``); otherwise the caller reports it
        (a task's results travel in its TASK_DONE).
        Returns (object_id, data or None, size, nested refs).
        """
        if sobj.size <= INLINE_THRESHOLD:
            data = sobj.to_bytes()
            if cache:
                self.cache.keep(object_id, data)
        else:
            data = None
            self._write_arena(object_id, sobj)
        if tell_raylet:
            self.conn.send((_PUT_TAG, object_id, data, sobj.size, sobj.nested_refs))
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
        cache = self.cache
        missing = cache.without_bytes(object_ids)
        located = {}
        raylet_timeout = timeout
        if missing and self.pushed.in_flight():
            start = time.monotonic()
            missing = self.pushed.wait(missing, timeout)
            if timeout is not None:
                raylet_timeout = max(0.0, timeout - (time.monotonic() - start))
        if missing:
            reply = self.requests.wait(missing, len(set(missing)), True, raylet_timeout)
            if reply is None:
                raise GetTimeoutError(f"get timed out after {timeout} s waiting for "
                                      f"{len(missing)} object(s), e.g. {missing[0].hex()}")
            for object_id, data, in_arena in reply:
                if in_arena:
                    located[object_id] = None
                else:
                    cache.keep(object_id, data)
                    located[object_id] = data
        bytes_of = cache.bytes_of
        results = []
        for object_id in object_ids:
            data = bytes_of(object_id)
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
        reply = self.requests.wait([object_id], 1, True, timeout)
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
        cache = self.cache
        found = cache.first_ready(refs, object_ids, num_returns)
        if found is not None:
            return found
        ready = cache.ready_among(object_ids)
        pushed = self.pushed
        if len(ready) < num_returns and pushed.in_flight():
            # Made by pushed calls (leased tasks, actor calls): their results come here.
            rest = [oid for oid in object_ids if oid not in ready]
            start = time.monotonic()
            if pushed.wait_some(rest, num_returns - len(ready), timeout):
                ready.update(cache.ready_among(rest))
                if timeout is not None:
                    timeout = max(0.0, timeout - (time.monotonic() - start))
        if len(ready) < num_returns:
            rest = [oid for oid in object_ids if oid not in ready]
            pushed.escape_all(rest)
            reply = self.requests.wait(rest, num_returns - len(ready), False, timeout, fetch_local,
                                       notify=fetch_local)
            if reply is None:
                # Timed out: which are ready now (answered at once; bounded all the same).
                reply = self.requests.wait(rest, 0, False, TIMED_OUT_WAIT_FOLLOW_UP, fetch_local) or []
            arrived = [object_id for object_id, _, _ in reply]
            ready.update(arrived)
            if fetch_local:
                # The raylet reports every requested object that is ready; remember them
                # (while we hold refs) so the next wait on the rest needs no round trip.
                cache.all_on_node(arrived)
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

    def still_pending(self, refs):
        """The refs among ``refs`` whose results are not in yet (max_pending_calls).
        Results of pushed calls arrive here (no round trip); the others are asked of
        the raylet, without waiting."""
        cache = self.cache
        missing = [ref for ref in refs if not cache.is_ready(ref.binary())]
        ask = [ref for ref in missing if not self.pushed.is_pending(ref.binary())]
        if not ask:
            return missing
        ready, _ = self.wait(ask, len(ask), 0, fetch_local=False)
        arrived = {ref.binary() for ref in ready}
        return [ref for ref in missing if ref.binary() not in arrived]

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
        if self.cache.has_bytes(object_id):
            resolve(None)
            return future
        self.pushed.escape_all([object_id])
        self.requests.wait_async(
            [object_id], 1, False,
            lambda pending: threading.Thread(target=resolve, args=(pending,), daemon=True).start(),
            now=True)
        return future
