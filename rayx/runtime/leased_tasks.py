"""The caller side of leased tasks: a caller pushes its tasks straight to workers
the raylet has lent it (PUSH_TASK on a link to the worker's own socket),
instead of sending them through the raylet. Two process hops per task instead
of four, and no raylet work per task: the raylet only grants and takes back
leases (``rayx.raylet.leases``) and accounts their resources.

Per resource shape the caller keeps a queue of tasks not sent yet and the
leases it holds. A task goes to the lease with the fewest tasks in flight;
short functions are pipelined: as many in flight per worker as add up to
about ``PIPELINE_SECONDS`` of measured run time (at most
``MAX_PIPELINE_DEPTH``), so a worker goes from one to the next without waiting
for us; a function not measured yet, or a long one, runs on a worker alone
(``rayx._private.pipelining``: the rule and the run-time averages). While
tasks wait, the caller asks for one more lease at a time. The worker writes a
leased task's lineage (its spec) to the GCS when it starts it. Results come
back like those of actor calls (``rayx.runtime.pushed_calls``: small ones stay
with the caller until a ref escapes).

What does not take this path (it goes through the raylet as before): tasks
with a scheduling strategy, GPU tasks, tasks of functions with ``max_calls``,
tasks whose ref arguments are not local yet (the raylet waits for them and pulls them), and every task of a
shape for which the raylet had no worker to lend while we held none (then for
``RAYLET_BACKOFF_SECONDS``). When the raylet says other nodes exist and it
cannot lend more, the tasks still queued go to the raylet, which may send
them to other nodes.

Leases idle for ``LEASE_IDLE_SECONDS`` go back to the raylet. When a leased
worker blocks in ``get`` it returns the tasks it has not started
(PUSH_GIVE_BACK) and gets no more until its task ends. When it dies, its tasks
run again if their ``max_retries`` allow, else fail with WorkerCrashedError
(TaskCancelledError if ``rayx.cancel`` was the cause).
"""
import collections
import threading
import time

from rayx import messages
from rayx._core import codec
from rayx._private.pipelining import PipelineRule, RunTimes
from rayx.exceptions import TaskCancelledError, WorkerCrashedError
from rayx.runtime import links
from rayx.runtime.pushed_calls import PushedCall, kept_arguments

MAX_PIPELINE_DEPTH = 64
PIPELINE_SECONDS = 0.02     # queue about this much work on each leased worker
LEASE_IDLE_SECONDS = 0.02
LEASE_RETRY_SECONDS = 0.01
RAYLET_BACKOFF_SECONDS = 0.01
MAX_LEASES_PER_SHAPE = 64
_TICK = 0.005
_NO_LEASE = (None, None)

# Hot path: built inline with the declaration's tag (tests/test_messages.py checks
# every such tuple against its declaration).
_PUSH_TASK_TAG = messages.PUSH_TASK.tag
_PUSH_CANCEL = messages.PUSH_CANCEL
_RETURN_LEASES = messages.RETURN_LEASES


class Lease:
    """A worker lent to us. Short tasks queue on it up to about PIPELINE_SECONDS of
    expected work; a task of unknown or long duration runs on it alone."""

    __slots__ = ("worker_id", "pid", "link", "inflight", "blocked", "idle_since", "last_done",
                 "load", "exclusive")

    def __init__(self, worker_id, pid, link):
        self.worker_id = worker_id
        self.pid = pid
        self.link = link
        self.inflight = {}          # task id -> PushedCall sent to the worker
        self.blocked = False        # its task blocks in get: send nothing more
        self.idle_since = time.monotonic()
        self.last_done = 0.0
        self.load = 0.0             # expected seconds of the short tasks in flight
        self.exclusive = 0          # tasks in flight of unknown or long duration

    def take(self, call):
        call.sent = time.monotonic()
        self.inflight[call.spec.task_id] = call
        if call.expected is None:
            self.exclusive += 1
        else:
            self.load += call.expected

    def release(self, task_id):
        """The call ``task_id`` left the worker (done or returned); None if unknown."""
        call = self.inflight.pop(task_id, None)
        if call is not None:
            if call.expected is None:
                self.exclusive -= 1
            else:
                self.load -= call.expected
            if not self.inflight:
                self.load = 0.0
        return call


class ShapeQueue:
    """The tasks of one resource shape: queued here, and the leases running them."""

    __slots__ = ("resources", "queue", "leases", "requesting", "retry_at", "raylet_until")

    def __init__(self, resources):
        self.resources = resources
        self.queue = collections.deque()
        self.leases = []
        self.requesting = False     # a lease request is out
        self.retry_at = 0.0         # ask again for a lease then (0: not waiting to)
        self.raylet_until = 0.0     # submit through the raylet until then


class LeasedTasks:
    """This process's tasks on leased workers, by resource shape."""

    def __init__(self, core):
        self.core = core
        self.pushed = core.pushed
        self.lock = threading.RLock()
        self.shapes = {}             # shape key -> ShapeQueue
        self.by_link = {}            # ProcessLink -> (ShapeQueue, Lease)
        self.run_times = RunTimes()  # seconds per task, by function id
        self.rule = PipelineRule(short_seconds=PIPELINE_SECONDS, budget_seconds=PIPELINE_SECONDS,
                                 max_depth=MAX_PIPELINE_DEPTH)
        self.closed = False
        self._ticker = None
        self._handlers = self.link_handlers()

    def link_handlers(self):
        """What a leased worker sends on its link: PUSH_DONE, PUSH_GIVE_BACK."""
        return messages.handlers({messages.PUSH_DONE: self._on_done,
                                  messages.PUSH_GIVE_BACK: self._on_give_back}, leading=("link",))

    # ------------------------------------------------------------ submit

    def submit(self, spec):
        """Refs to the returns if the task takes a lease, else None (the caller submits
        it through the raylet)."""
        if (spec.strategy != codec.STRATEGY_DEFAULT or self.closed or spec.resources.get("GPU")
                or "max_calls" in spec.extra):     # the raylet replaces a worker that reached it
            return None
        values = self._local_arguments(spec)
        if values is None:
            return None
        key = spec.shape_key()
        shape = self.shapes.get(key)
        if shape is None:
            with self.lock:
                shape = self.shapes.setdefault(key, ShapeQueue(spec.resources))
        if not shape.leases and shape.raylet_until > time.monotonic():
            return None
        call = PushedCall(spec, kept_arguments(spec), values)
        refs = self.pushed.track(call)
        with self.lock:
            shape.queue.append(call)
            self._pump(shape)
        return refs

    def _local_arguments(self, spec):
        """{object id: inline bytes | None (in the arena)} of the ref arguments, or None
        when one is not local (or is an error: the raylet fails the task with it)."""
        arg_refs = spec.arg_refs()
        if not arg_refs:
            return {}
        resolved, missing, error = self.core.cache.local_values(arg_refs)
        return None if missing or error is not None else resolved

    def _pump(self, shape):
        """Send queued tasks to leases with room; ask for a lease if tasks still wait
        (lock held)."""
        queue = shape.queue
        leases = shape.leases
        run_times = self.run_times
        expected_of = self.rule.expected
        has_room = self.rule.has_room
        while queue:
            call = queue[0]
            if call.done:
                queue.popleft()
                continue
            expected = call.expected = expected_of(run_times, call.spec.function_id)
            best = None
            for lease in leases:
                if not lease.blocked and has_room(len(lease.inflight), lease.load, lease.exclusive,
                                                  expected) and (best is None or lease.load < best.load):
                    best = lease
            if best is None:
                break
            queue.popleft()
            best.take(call)
            best.link.send((_PUSH_TASK_TAG, call.spec, call.values))
        if queue and not shape.requesting and len(leases) < MAX_LEASES_PER_SHAPE:
            if not leases or not shape.retry_at:
                self._request_lease(shape)

    def _request_lease(self, shape):
        shape.requesting = True
        shape.retry_at = 0.0
        self.core.requests.call_async("lease", (shape.resources,),
                                      lambda ok, answer: self._lease_answered(shape, ok, answer))

    def _lease_answered(self, shape, ok, answer):
        with self.lock:
            shape.requesting = False
            if self.closed:
                if ok and answer[0] == "granted":
                    self.core.conn.send(_RETURN_LEASES([answer[1]]))
                return
            if ok and answer[0] == "granted":
                _, worker_id, path, pid = answer
                try:
                    link = links.connect(self.core.conn, path, self._handlers, self._on_break)
                except OSError:
                    self.core.conn.send(_RETURN_LEASES([worker_id]))
                    self._to_raylet(shape)
                    return
                lease = Lease(worker_id, pid, link)
                shape.leases.append(lease)
                self.by_link[link] = (shape, lease)
                self._pump(shape)
                self._start_ticker()
                return
            if not ok or answer[1] or not shape.leases:
                # No worker for us (or other nodes could take the rest): the raylet queues them.
                if not shape.leases:
                    shape.raylet_until = time.monotonic() + RAYLET_BACKOFF_SECONDS
                self._to_raylet(shape)
                return
            shape.retry_at = time.monotonic() + LEASE_RETRY_SECONDS
            self._start_ticker()

    def _to_raylet(self, shape):
        """Every task still queued for ``shape`` goes through the raylet (lock held)."""
        queue, shape.queue = shape.queue, collections.deque()
        send_via_raylet = self.pushed.send_via_raylet
        for call in queue:
            if not call.done:
                send_via_raylet(call)

    # ---------------------------------------------------------- results

    def _on_done(self, link, task_id, results):
        with self.lock:
            shape, lease = self.by_link.get(link, _NO_LEASE)
            if lease is None:
                return
            call = lease.release(task_id)
            if call is None:
                return
            now = time.monotonic()
            self._measure(call, lease, now)
            lease.blocked = False
            if shape.queue:
                self._pump(shape)
            if not lease.inflight:
                lease.idle_since = now
        self.pushed.complete(call, results)

    def _on_give_back(self, link, task_ids):
        """The worker blocks in get: the tasks it has not started come back to the queue."""
        with self.lock:
            shape, lease = self.by_link.get(link, _NO_LEASE)
            if lease is None:
                return
            lease.blocked = True
            returned = [call for call in map(lease.release, task_ids) if call is not None]
            shape.queue.extendleft(reversed(returned))
            self._pump(shape)

    def _measure(self, call, lease, now):
        """How long its function ran: from when it was sent, or when the task before it
        on this worker ended, whichever is later."""
        seconds = now - max(call.sent, lease.last_done)
        lease.last_done = now
        self.run_times.record(call.spec.function_id, seconds)

    def _on_break(self, link):
        """The leased worker died (or its socket broke): its tasks run again or fail."""
        failed = []
        with self.lock:
            found = self.by_link.pop(link, None)
            if found is None:
                return
            shape, lease = found
            shape.leases.remove(lease)
            retried = []
            for call in lease.inflight.values():
                spec = call.spec
                if call.cancelled:
                    failed.append((call, _cancelled_error(spec, f"its worker (pid={lease.pid}) was killed")))
                elif spec.take_retry():
                    retried.append(call)
                else:
                    failed.append((call, WorkerCrashedError.for_task(
                        spec, "died", lease.pid, self.core.node_id, "unknown")))
            lease.inflight.clear()
            shape.queue.extendleft(reversed(retried))
            if not self.closed:
                self._pump(shape)
        for call, error in failed:
            self.pushed.fail(call, error)

    # ------------------------------------------------------------ cancel

    def cancel(self, task_id, force):
        """rayx.cancel of a task sent here; False if this process does not hold it."""
        with self.lock:
            call = self._take_queued(task_id)
            if call is None:
                for shape in self.shapes.values():
                    for lease in shape.leases:
                        running = lease.inflight.get(task_id)
                        if running is not None:
                            running.cancelled = True
                            lease.link.send_now(_PUSH_CANCEL(task_id, bool(force)))
                            return True
                return False
        self.pushed.fail(call, _cancelled_error(call.spec, "before it ran"))
        return True

    def _take_queued(self, task_id):
        for shape in self.shapes.values():
            for call in shape.queue:
                if call.spec.task_id == task_id and not call.done:
                    shape.queue.remove(call)
                    return call
        return None

    # ------------------------------------------------- idle leases, retries

    def _start_ticker(self):
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick_loop, name="rayx-leases", daemon=True)
            self._ticker.start()

    def _tick_loop(self):
        while True:
            time.sleep(_TICK)
            with self.lock:
                if self.closed or not self._tick():
                    self._ticker = None
                    return

    def _tick(self):
        """Return idle leases, ask again where a lease was refused; False once there is
        nothing left to watch (lock held)."""
        now = time.monotonic()
        watching = False
        returned = []
        for shape in self.shapes.values():
            if shape.retry_at:
                watching = True
                if now >= shape.retry_at and not shape.requesting:
                    if shape.queue:
                        self._request_lease(shape)
                    else:
                        shape.retry_at = 0.0
            for lease in list(shape.leases):
                if lease.inflight or shape.queue:
                    watching = True
                elif now - lease.idle_since >= LEASE_IDLE_SECONDS:
                    returned.append(lease.worker_id)
                    self._drop(shape, lease)
                else:
                    watching = True
        if returned:
            self.core.conn.send(_RETURN_LEASES(returned))
        return watching

    def _drop(self, shape, lease):
        shape.leases.remove(lease)
        self.by_link.pop(lease.link, None)
        lease.link.close()

    def close(self):
        """Give every lease back (the process shuts down)."""
        with self.lock:
            self.closed = True
            returned = []
            for shape in self.shapes.values():
                for lease in list(shape.leases):
                    returned.append(lease.worker_id)
                    self._drop(shape, lease)
            if returned and not self.core.conn.closed:
                try:
                    self.core.conn.send_now(_RETURN_LEASES(returned))
                except Exception:
                    pass


def _cancelled_error(spec, how):
    return TaskCancelledError(spec.task_id.hex(), f"The task {spec.function_name} was cancelled {how}")
