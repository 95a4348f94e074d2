"""A worker's work loop, and how it runs normal tasks.

Work reaches a worker two ways: from its raylet (EXECUTE, dispatched to
``on_execute`` by whichever thread reads the raylet socket), or pushed by a
caller on a link to the worker's own socket (PUSH_TASK: leased tasks, and
calls to the actor it hosts). Either becomes a ``Work`` item in one inbox; the
worker's main thread takes them in order, reading the sockets itself while the
inbox is empty (so replies and new work reach it without a thread hand-off).

Normal tasks run one at a time on the main thread: resolve the arguments
(inline values from the message, large ones zero-copy from the arena), call
the function, store the results (inline or into the arena) and report them in
one reply (``rayx.runtime.task_results``). Once a worker has run an actor's
constructor it hosts that actor, and its calls go to ``rayx.runtime.actor_host``.

A task of a function with ``max_calls`` is counted; the call that reaches the
limit is answered with "exiting" set and the worker exits (the raylet starts
a replacement). ``retry_exceptions`` given as a list of classes travels
pickled in the spec's ``extra``; only those (and subclasses) are retried.
A task that blocks in ``get`` makes the worker give back the tasks queued
behind it (GIVE_BACK to the raylet, PUSH_GIVE_BACK to the caller that leased
it), which could otherwise wait on it while it waits on them.
"""
import _thread
import os
import queue
import signal
import sys
import threading

from rayx import messages
from rayx._core import codec
from rayx._core.ids import TaskID
from rayx._private import sessions
from rayx.exceptions import ActorDiedError, TaskCancelledError
from rayx.gcs import tables
from rayx.runtime import context, links, serialization, task_context
from rayx.runtime.actor_host import ActorExit, ActorHost, end_actor
from rayx.runtime.task_events import TaskEvents, now
from rayx.runtime.task_results import Cancellations, TaskResults

_NORMAL_TASK = codec.NORMAL_TASK
_GIVE_BACK = messages.GIVE_BACK
_PUSH_GIVE_BACK = messages.PUSH_GIVE_BACK
_TASK_DONE = messages.TASK_DONE


class Work:
    """A task or actor call to run here: sent by the raylet (``route`` None, answered
    with TASK_DONE) or pushed by a caller (``route``: the link to answer on)."""

    __slots__ = ("spec", "values", "gpu_ids", "route")

    def __init__(self, spec, values, gpu_ids, route):
        self.spec = spec
        self.values = values          # {object id: inline bytes | None} of its ref arguments
        self.gpu_ids = gpu_ids
        self.route = route


STOP = Work(None, None, (), None)     # the worker is to exit (EXIT, or the raylet went away)


class Executor:
    """What runs in a worker process: its inbox, its tasks, and (``host``) its actor."""

    def __init__(self):
        self.queue = queue.SimpleQueue()
        self._has_work = threading.Event()
        self._blocked = 0            # depth of gets the running task is blocked in
        self._running = None         # id of the task the main thread runs now
        self.cancellations = Cancellations()
        self.core = None
        self.host = None             # the ActorHost, once this worker hosts an actor
        self.results = None          # TaskResults
        self._events = None          # TaskEvents: one record per task run (rayx list tasks, timeline)
        self._calls_made = {}        # function id -> tasks run here (functions with max_calls)
        self._namespaces = {}        # job id -> that job's namespace
        self._listener = None        # LinkListener for leased tasks and pushed actor calls
        self._shown_name = None      # the task name the raylet last heard from us

    # -------------------------------------------------------------- inbox

    def on_execute(self, spec, values, gpu_ids):
        """EXECUTE from the raylet."""
        self.submit(Work(spec, values, gpu_ids, None))

    def on_exit(self, reason):
        """EXIT from the raylet (or it closed the connection): stop after what runs now."""
        self.queue.put(STOP)
        self._has_work.set()

    def on_cancel(self, task_id):
        """CANCEL from the raylet."""
        self.cancel(task_id)

    def link_handlers(self):
        """What callers push on their links to this worker: PUSH_TASK, PUSH_CANCEL."""
        return messages.handlers({messages.PUSH_TASK: self._on_push,
                                  messages.PUSH_CANCEL: self._on_push_cancel}, leading=("link",))

    def _on_push(self, link, spec, values):
        self.submit(Work(spec, values, (), link))

    def _on_push_cancel(self, link, task_id, force):
        if force and self._running == task_id:
            os.kill(os.getpid(), signal.SIGKILL)    # as the raylet does for its tasks
        self.cancel(task_id)

    def submit(self, work):
        if self._blocked and work.spec.task_type == _NORMAL_TASK:
            # We are blocked in get: tasks queued behind the current one go back to
            # whoever sent them, or they could wait on us while we wait on them.
            self._give_back([work])
            return
        self.queue.put(work)
        self._has_work.set()

    def _give_back(self, works):
        """Tasks this worker will not start: to the raylet (GIVE_BACK), or to the caller
        that leased us (PUSH_GIVE_BACK)."""
        from_raylet = []
        by_caller = {}
        for work in works:
            if work.route is None:
                from_raylet.append(work.spec.task_id)
            else:
                by_caller.setdefault(work.route, []).append(work.spec.task_id)
        if from_raylet:
            self.core.conn.send(_GIVE_BACK(from_raylet))
        for route, task_ids in by_caller.items():
            route.send(_PUSH_GIVE_BACK(task_ids))

    def before_blocking(self):
        """The running task is about to wait in get: give back the tasks queued here."""
        self._blocked += 1
        kept, given = [], []
        while True:
            try:
                work = self.queue.get_nowait()
            except queue.Empty:
                break
            if work is not STOP and work.spec.task_type == _NORMAL_TASK:
                given.append(work)
            else:
                kept.append(work)
        for work in kept:
            self.queue.put(work)
        if given:
            self._give_back(given)

    def after_blocking(self):
        self._blocked -= 1

    def _next_work(self):
        """The next work to do; the main thread reads the sockets meanwhile (so replies
        and new work reach it without a thread hand-off)."""
        while True:
            try:
                return self.queue.get_nowait()
            except queue.Empty:
                self._has_work.clear()
                if self.queue.empty():
                    self.core.conn.wait_for(self._has_work)

    def _listen(self):
        """Open this worker's own socket (for leased tasks, and for pushed calls once it
        hosts an actor) and tell the raylet."""
        session_dir = self.core.node_info.get("session_dir", "")
        path = sessions.session_socket_path(session_dir, f"worker-{os.getpid()}-{os.urandom(3).hex()}.sock")
        try:
            self._listener = links.LinkListener(self.core.conn, path, self.link_handlers(), _ignore)
        except OSError:
            return
        self.core.conn.send(messages.LISTENING(path))

    # -------------------------------------------------------------- the loop

    def run(self, core):
        self.core = core
        self._events = TaskEvents(core)
        self.results = TaskResults(core, self._events, self.queue.empty)
        self._listen()
        while True:
            try:
                work = self._next_work()
            except KeyboardInterrupt:   # a rayx.cancel that arrived just after its task ended
                continue
            if work is STOP:
                self._events.flush()
                return
            spec = work.spec
            if spec.task_type == _NORMAL_TASK or spec.task_type == codec.ACTOR_CREATION_TASK:
                _set_visible_gpus(work.gpu_ids)    # leased tasks never ask for GPUs
                if work.route is None:
                    self._shown_name = None        # the raylet names us for its tasks
                if self.execute(spec, work.values, work.route):
                    return                         # max_calls reached: the raylet replaces us
            elif self.host is None:
                error = ActorDiedError("This worker hosts no actor (its constructor did not run here).")
                self.results.reply(spec, self.results.of_error(spec, error), False, work.route)
            else:
                self.host.dispatch(spec, work.values, work.route)

    # ---------------------------------------------------------------- cancel

    def cancel(self, task_id):
        """rayx.cancel: interrupt the task if it runs now (KeyboardInterrupt in it, as
        Ray does), or drop it when its turn comes. Actor calls, as Ray: one not started
        is dropped, a running call of an async actor has its asyncio task cancelled,
        and a running call of another actor goes on (``is_canceled()`` tells it)."""
        self.cancellations.add(task_id)
        if self._running == task_id:
            _thread.interrupt_main()
        elif self.host is not None:
            self.host.cancel_async(task_id)

    def is_cancelled(self, task_id):
        return task_id in self.cancellations

    def hosts_async_actor(self):
        return self.host is not None and self.host.is_async()

    # ---------------------------------------------------------------- tasks

    def execute(self, spec, values, route=None):
        """Run one task (or actor constructor) and send its results to whoever sent it:
        the raylet, or (``route``) the caller that leased this worker. True when this
        worker is to exit now (its function's max_calls is reached)."""
        results = self.results
        if self.cancellations and self.cancellations.dropped(spec, route, results):
            return False
        events = self._events
        if route is not None:
            self._show_name(spec)
            events.started(spec)
        while True:
            start = now()
            outcome = self._run_task(spec, values, start)
            if not results.retried_here(spec, start, outcome, route):
                break
        entries, error, retryable = outcome
        events.record(spec, start, error)
        if route is not None:
            events.made_objects(entries)
        elif spec.extra and self._max_calls_reached(spec):
            # Never a crash: the raylet finishes (or retries) the task and replaces us.
            events.flush()
            self.core.conn.send_now(_TASK_DONE(spec.task_id, entries, retryable, True))
            return True
        results.reply(spec, entries, retryable, route)
        return False

    def _max_calls_reached(self, spec):
        """Count a run of a function with max_calls (tasks from the raylet: leased workers
        never get them); True at the limit."""
        max_calls = spec.extra.get("max_calls")
        if not max_calls:
            return False
        count = self._calls_made[spec.function_id] = self._calls_made.get(spec.function_id, 0) + 1
        return count >= max_calls

    def _show_name(self, spec):
        """Tell the raylet what runs here (it prefixes our output with the name)."""
        name = spec.function_name.rpartition(".")[2]
        if name != self._shown_name:
            self._shown_name = name
            self.core.conn.send_now(messages.NOW_RUNNING(name))

    def _run_task(self, spec, values, start):
        """(result entries, error class or None, retryable) of one run."""
        core = self.core
        results = self.results
        task_context.enter_task(TaskID(spec.task_id), spec.function_name, spec.job_id, spec.actor_id)
        retryable = False
        error = None
        self._running = spec.task_id
        try:
            self._enter_namespace(spec.job_id)
            fn = core.functions.load(spec.function_id, spec.job_id)
            args, kwargs = results.resolve_args(spec, values)
            if spec.task_type == codec.ACTOR_CREATION_TASK:
                self.host = ActorHost(fn(*args, **kwargs), spec, fn, core, results, self.cancellations)
                if not spec.extra.get("lifetime_resources"):
                    core.pushed.wait_here_always()     # holds nothing to hand back
                result = None
            else:
                result = fn(*args, **kwargs)
            entries = results.of_return(spec, result)
        except ActorExit:
            # exit_actor() in the constructor: the actor ends for good (no restart).
            self._events.record(spec, start, ActorExit)
            end_actor(core, results, spec, spec, "the actor called exit_actor() in its constructor")
        except KeyboardInterrupt:
            if spec.task_id not in self.cancellations:
                raise
            error = TaskCancelledError
            entries = results.of_cancel(spec)
        except Exception as exc:
            error = type(exc)      # the class: keeping the exception would keep its frames
            entries = results.of_exception(spec, exc)
            retryable = results.retryable(spec, exc)
            if spec.task_type == codec.ACTOR_CREATION_TASK:
                self._events.record(spec, start, error)
                self._constructor_failed(spec, entries)
        finally:
            self._running = None
            self.cancellations.discard(spec.task_id)
            task_context.leave_task()
        return entries, error, retryable

    def _enter_namespace(self, job_id):
        """Run as the job's namespace, so names (named actors, get_actor) resolve as in its driver.

        A worker runs one job's task at a time, and an actor belongs to one job for life.
        """
        namespace = self._namespaces.get(job_id)
        if namespace is None:
            namespace = ""
            try:
                info = tables.JOBS.get(self.core.gcs, job_id)
                if info:
                    namespace = info.get("namespace") or ""
            except Exception:
                pass
            self._namespaces[job_id] = namespace
        context.set_namespace(namespace or None)

    def _constructor_failed(self, spec, entries):
        """Report the actor dead with its constructor's error, then exit."""
        cause = serialization.deserialize(entries[0][1]).error
        error = ActorDiedError(f"The actor {spec.actor_class_name()} is dead: its constructor raised "
                               f"{cause}", actor_id=spec.actor_id.hex(), cause=cause)
        death = serialization.serialize_error(error).to_bytes()
        self._events.flush()
        # One write: the raylet must see the exit before it could route another call here.
        self.core.conn.send_all_now([_TASK_DONE(spec.task_id, entries, False),
                                     messages.ACTOR_EXIT(spec.actor_id, "its constructor raised", death)])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _ignore(*_):
    pass


def _set_visible_gpus(gpu_ids):
    if gpu_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    elif "CUDA_VISIBLE_DEVICES" in os.environ:     # cheap when unset (every leased task)
        del os.environ["CUDA_VISIBLE_DEVICES"]
