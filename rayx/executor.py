"""Running tasks and actor calls inside a worker process.

The core worker's reader thread hands EXECUTE messages to ``Executor.submit``.
Normal tasks run one at a time on the worker's main thread: resolve the
arguments (inline values from the message, large ones zero-copy from the
arena), call the function, store the results (inline or into the arena) and
report them in one TASK_DONE. An exception becomes a RayTaskError carrying
the remote traceback, stored as the value of every return.

Once a worker has run an actor's constructor it hosts that actor: calls run
in arrival order on the main thread, or on a thread pool of
``max_concurrency`` threads (threaded actors), or as asyncio tasks on one
event loop thread (actors with ``async def`` methods). An actor that declares
``concurrency_groups`` gets one pool (threaded) or one semaphore (async) per
group, plus the default group of ``max_concurrency``; a call names its group
in its spec's ``extra``.

A task of a function with ``max_calls`` is counted; the call that reaches the
limit is answered with "exiting" set and the worker exits (the raylet starts
a replacement). ``retry_exceptions`` given as a list of classes travels
pickled in the spec's ``extra``; only those (and subclasses) are retried.

An actor's worker also listens on a socket of its own for direct calls from
callers on its node (``rayx.direct_calls``): each call's result goes back on
the socket it came from, and is registered with the raylet (batched) so the
rest of the cluster can use it. Calls that came through the raylet are
answered to the raylet. Retries of direct calls (``max_task_retries`` with
``retry_exceptions``) happen here, in place.
"""
import _thread
import asyncio
import collections
import inspect
import os
import queue
import signal
import sys
import threading
import traceback

import cloudpickle

from rayx import protocol as p
from rayx import serialization
from rayx._private import sessions
from rayx.call_threads import CallThreads
from rayx._core import codec
from rayx._core.ids import TaskID
from rayx.exceptions import ActorDiedError, TaskCancelledError, ObjectLostError, RayTaskError
from rayx.object_ref import ObjectRef
from rayx.task_events import TaskEvents, _now

TERMINATE_METHOD = "__ray_terminate__"
ARG_RESTORE_TIMEOUT = 60.0


class ActorExit(BaseException):
    """Raised by ``rayx.actor.exit_actor()`` to end the actor from inside a method."""


class Executor:
    def __init__(self):
        self.queue = queue.SimpleQueue()
        self._has_work = threading.Event()
        self._blocked = 0            # depth of gets the running task is blocked in
        self._running = None         # id of the task the main thread runs now
        self._cancelled = set()      # ids of tasks rayx.cancel reached here
        self.core = None
        self.actor = None            # the actor instance this worker hosts
        self.actor_spec = None
        self._pool = None            # threaded actors
        self._group_pools = None     # threaded actors with concurrency groups: name -> CallThreads
        self._loop = None            # async actors
        self._async_slots = None     # an asyncio.Semaphore, made on the loop
        self._async_limit = 1000
        self._async_groups = None    # async actors with concurrency groups: name -> size
        self._async_group_slots = {}  # name -> asyncio.Semaphore, made on the loop
        self._retry_classes = {}     # pickled retry_exceptions list -> tuple of classes
        self._calls_made = {}        # function id -> tasks run here (functions with max_calls)
        self._async_inbox = collections.deque()   # calls handed to the event loop, not started
        self._async_running = {}     # task id -> asyncio task of each async call started
        self._namespaces = {}        # job id -> that job's namespace
        self._events = None          # TaskEvents: one record per task run (rayx list tasks, timeline)
        self._listener = None        # PeerListener for leased tasks and direct actor calls
        self._shown_name = None      # the task name the raylet last heard from us

    def submit(self, message):
        if self._blocked and message[0] in (p.EXECUTE, p.DIRECT_CALL) and \
                message[1].task_type == codec.NORMAL_TASK:
            # We are blocked in get: tasks queued behind the current one go back to
            # whoever sent them, or they could wait on us while we wait on them.
            self._give_back([message])
            return
        self.queue.put(message)
        self._has_work.set()

    def _give_back(self, messages):
        """Tasks this worker will not start: to the raylet (GIVE_BACK), or to the caller
        that leased us (DIRECT_RETURN)."""
        from_raylet = []
        by_caller = {}
        for message in messages:
            if message[0] == p.EXECUTE:
                from_raylet.append(message[1].task_id)
            else:
                by_caller.setdefault(message[4], []).append(message[1].task_id)
        if from_raylet:
            self.core.conn.send((p.GIVE_BACK, from_raylet))
        for route, task_ids in by_caller.items():
            route.send((p.DIRECT_RETURN, task_ids))

    def _report(self, message):
        """Send a result: at once when nothing else is queued here, else with the next
        flush (within a millisecond): a stream of calls then costs few writes."""
        if self.queue.empty():
            self.core.conn.send_now(message)
        else:
            self.core.conn.defer(message)

    def _reply(self, spec, results, retryable, route):
        """Results of a call to whoever sent it: the raylet (``route`` None) or a direct caller."""
        if route is None:
            self._report((p.TASK_DONE, spec.task_id, results, retryable))
            return
        conn = self.core.conn
        # Results in the arena or holding refs are registered with the raylet here (the
        # caller registers small plain ones itself, if ever needed). The raylet must
        # hear of them, and of refs this call made or kept, before the caller could
        # pass them on or drop its own refs.
        urgent = bool(spec.nested_refs) or bool(self.core.refs.events)
        for object_id, data, size, nested, is_error in results:
            if data is None or nested:
                conn.defer((p.PUT, object_id, data, size, nested, is_error, False))
                urgent = True
        if urgent:
            conn.flush()
        message = (p.DIRECT_DONE, spec.task_id, results)
        if self.queue.empty():
            route.send(message)
        else:
            route.defer(message)

    def _listen_for_direct_calls(self):
        """Open this worker's own socket (for leased tasks, and for direct calls once it
        hosts an actor) and tell the raylet."""
        session_dir = self.core.node_info.get("session_dir", "")
        path = sessions.session_socket_path(session_dir, f"worker-{os.getpid()}-{os.urandom(3).hex()}.sock")
        try:
            self._listener = p.PeerListener(self.core.conn, path, self._on_direct_message, _ignore)
        except OSError:
            return
        self.core.conn.send((p.LISTENING, path))

    def _on_direct_message(self, peer, message):
        tag = message[0]
        if tag == p.DIRECT_CALL:
            self.submit((p.DIRECT_CALL, message[1], message[2], None, peer))
        elif tag == p.DIRECT_CANCEL:
            task_id, force = message[1], message[2]
            if force and self._running == task_id:
                os.kill(os.getpid(), signal.SIGKILL)    # as the raylet does for its tasks
            self.cancel(task_id)

    def before_blocking(self):
        """The running task is about to wait in get: give back the tasks queued here."""
        self._blocked += 1
        kept, given = [], []
        while True:
            try:
                message = self.queue.get_nowait()
            except queue.Empty:
                break
            if message[0] in (p.EXECUTE, p.DIRECT_CALL) and message[1].task_type == codec.NORMAL_TASK:
                given.append(message)
            else:
                kept.append(message)
        for message in kept:
            self.queue.put(message)
        if given:
            self._give_back(given)

    def after_blocking(self):
        self._blocked -= 1

    def _next_message(self):
        """The next message to act on; the main thread reads the raylet socket meanwhile
        (so its replies and new work reach it without a thread hand-off)."""
        while True:
            try:
                return self.queue.get_nowait()
            except queue.Empty:
                self._has_work.clear()
                if self.queue.empty():
                    self.core.conn.wait_for(self._has_work)

    def run(self, core):
        self.core = core
        self._events = TaskEvents(core)
        self._listen_for_direct_calls()
        while True:
            try:
                message = self._next_message()
            except KeyboardInterrupt:   # a rayx.cancel that arrived just after its task ended
                continue
            if message[0] == p.EXIT:
                self._events.flush()
                return
            if message[0] == p.DIRECT_CALL:
                spec = message[1]
                if spec.task_type == codec.NORMAL_TASK:
                    _set_visible_gpus(())      # leased tasks never ask for GPUs
                    self.execute(spec, message[2], message[4])
                else:
                    self.dispatch_call(spec, message[2], message[4])
                continue
            _, spec, values, gpu_ids = message
            if spec.task_type == codec.ACTOR_TASK:
                self.dispatch_call(spec, values)
            else:
                _set_visible_gpus(gpu_ids)
                self._shown_name = None        # the raylet names us for its tasks
                if self.execute(spec, values):
                    return                     # max_calls reached: the raylet replaces us

    # ---------------------------------------------------------------- tasks

    def cancel(self, task_id):
        """rayx.cancel: interrupt the task if it runs now (KeyboardInterrupt in it, as
        Ray does), or drop it when its turn comes. Actor calls, as Ray: one not started
        is dropped, a running call of an async actor has its asyncio task cancelled,
        and a running call of another actor goes on (``is_canceled()`` tells it)."""
        self._cancelled.add(task_id)
        if self._running == task_id:
            _thread.interrupt_main()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_async_call, task_id)

    def _cancel_async_call(self, task_id):
        task = self._async_running.get(task_id)
        if task is not None:
            task.cancel()

    def is_cancelled(self, task_id):
        return task_id in self._cancelled

    def hosts_async_actor(self):
        return self._loop is not None

    def _dropped(self, spec, route):
        """Reply TaskCancelledError if rayx.cancel reached this call before it started."""
        if spec.task_id not in self._cancelled:
            return False
        self._cancelled.discard(spec.task_id)
        self._reply(spec, self._cancelled_results(spec), False, route)
        return True

    def execute(self, spec, values, route=None):
        """Run one task (or actor constructor) and send its results to whoever sent it:
        the raylet, or (``route``) the caller that leased this worker. True when this
        worker is to exit now (its function's max_calls is reached)."""
        if self._cancelled and self._dropped(spec, route):
            return
        if route is not None:
            self._show_name(spec)
            self._events.started(spec)
        while True:
            start = _now()
            outcome = self._run_task(spec, values, start)
            if not self._retried_here(spec, start, outcome, route):
                break
        results, error, retryable = outcome
        events = self._events
        events.record(spec, start, error)
        if route is not None:
            events.made_objects(results)
        elif spec.extra and self._max_calls_reached(spec):
            # Never a crash: the raylet finishes (or retries) the task and replaces us.
            events.flush()
            self.core.conn.send_now((p.TASK_DONE, spec.task_id, results, retryable, True))
            return True
        self._reply(spec, results, retryable, route)
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
            self.core.conn.send_now((p.NOW_RUNNING, name))

    def _run_task(self, spec, values, start):
        """(results, error class or None, retryable) of one run."""
        core = self.core
        core.enter_task(TaskID(spec.task_id), spec.function_name, spec.job_id, spec.actor_id)
        retryable = False
        error = None
        self._running = spec.task_id
        try:
            self._enter_namespace(spec.job_id)
            fn = core.load_function(spec.function_id, spec.job_id)
            args, kwargs = self.resolve_args(spec, values)
            if spec.task_type == codec.ACTOR_CREATION_TASK:
                self.actor = fn(*args, **kwargs)
                self.actor_spec = spec
                self._setup_concurrency(spec, fn)
                if not spec.extra.get("lifetime_resources"):
                    core.direct.local_wait_limit = None     # holds nothing to hand back
                result = None
            else:
                result = fn(*args, **kwargs)
            results = self.store_results(spec, result)
        except ActorExit:
            # exit_actor() in the constructor: the actor ends for good (no restart).
            self.actor_spec = spec
            self._events.record(spec, start, ActorExit)
            self._exit_actor(spec, "the actor called exit_actor() in its constructor")
        except KeyboardInterrupt:
            if spec.task_id not in self._cancelled:
                raise
            error = TaskCancelledError
            results = self._cancelled_results(spec)
        except Exception as exc:
            error = type(exc)      # the class: keeping the exception would keep its frames
            results = self.error_results(spec, exc)
            retryable = spec.retry_exceptions and self._retryable(spec, exc)
            if spec.task_type == codec.ACTOR_CREATION_TASK:
                self._events.record(spec, start, error)
                self._constructor_failed(spec, results)
        finally:
            self._running = None
            self._cancelled.discard(spec.task_id)
            core.leave_task()
        return results, error, retryable

    def _cancelled_results(self, spec):
        return self.fixed_error_results(spec, TaskCancelledError(
            spec.task_id.hex(), f"The task {spec.function_name} was cancelled with rayx.cancel"))

    def _enter_namespace(self, job_id):
        """Run as the job's namespace, so names (named actors, get_actor) resolve as in its driver.

        A worker runs one job's task at a time, and an actor belongs to one job for life.
        """
        namespace = self._namespaces.get(job_id)
        if namespace is None:
            namespace = ""
            try:
                blob = self.core.gcs.get("jobs", job_id)
                if blob:
                    namespace = codec.loads(blob).get("namespace") or ""
            except Exception:
                pass
            self._namespaces[job_id] = namespace
        from rayx import api
        api._namespace = namespace or None

    def _constructor_failed(self, spec, results):
        """Report the actor dead with its constructor's error, then exit."""
        cause = serialization.deserialize(results[0][1]).error
        error = ActorDiedError(f"The actor {spec.actor_class_name()} is dead: its constructor raised "
                               f"{cause}", actor_id=spec.actor_id.hex(), cause=cause)
        death = serialization.serialize_error(error).to_bytes()
        self._events.flush()
        # One write: the raylet must see the exit before it could route another call here.
        self.core.conn.send_all_now([(p.TASK_DONE, spec.task_id, results, False),
                                     (p.ACTOR_EXIT, spec.actor_id, "its constructor raised", death)])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def resolve_args(self, spec, values):
        """Positional and keyword arguments: inline values, or the objects top-level refs name."""
        args = []
        kwargs = {}
        arena = self.core.arena
        for kind, keyword, data in spec.args:
            if kind == codec.ARG_REF:
                inline = values.get(data)
                buffer = inline if inline is not None else arena.get(data)
                if buffer is None:
                    # Not in the arena (spilled meanwhile): the raylet restores it.
                    value = self.core.get([ObjectRef(data)], timeout=ARG_RESTORE_TIMEOUT)[0]
                else:
                    value = serialization.deserialize(buffer)
                    if type(value) is serialization.ErrorValue:
                        raise value.error
            else:
                value = serialization.deserialize(data)
            if keyword:
                kwargs[keyword] = value
            else:
                args.append(value)
        return args, kwargs

    def store_results(self, spec, result):
        num_returns = spec.num_returns
        if num_returns == 1:
            outputs = (result,)
        elif num_returns == 0:
            outputs = ()
        else:
            if not isinstance(result, (tuple, list)) or len(result) != num_returns:
                raise ValueError(f"{spec.function_name} has num_returns={num_returns} but returned "
                                 f"{type(result).__name__} {_short(result)}; return a tuple or list "
                                 f"of {num_returns} values")
            outputs = result
        results = []
        store = self.core.store
        for object_id, value in zip(spec.return_ids(), outputs):
            object_id, data, size, nested = store(object_id, serialization.serialize(value), cache=False)
            results.append((object_id, data, size, nested, False))
        return results

    def error_results(self, spec, exc):
        tb = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
        # Pickling never fails (what cannot be pickled of ``exc`` is left out, and said).
        error = RayTaskError(spec.function_name, tb, exc, pid=os.getpid(),
                             ip=self.core.node_info.get("node_ip_address"))
        return self.fixed_error_results(spec, error)

    @staticmethod
    def fixed_error_results(spec, error):
        data = serialization.serialize_error(error).to_bytes()
        return [(object_id, data, len(data), (), True) for object_id in spec.return_ids()]

    # --------------------------------------------------------------- actors

    def _setup_concurrency(self, spec, cls):
        is_async = spec.is_asyncio or any(
            inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
            for _, member in inspect.getmembers(cls, predicate=inspect.isfunction))
        groups = spec.extra.get("concurrency_groups")
        if is_async:
            self._loop = asyncio.new_event_loop()
            self._async_limit = spec.max_concurrency or 1000
            self._async_groups = groups or None
            threading.Thread(target=self._loop.run_forever, name="rayx-actor-loop", daemon=True).start()
        elif groups:
            # The default group too gets its own threads: the main thread keeps reading,
            # so a busy group never holds up the calls of another.
            self._pool = CallThreads(max(1, spec.max_concurrency))
            self._group_pools = {name: CallThreads(size, name=f"rayx-actor-{name}")
                                 for name, size in groups.items()}
        elif spec.max_concurrency > 1:
            self._pool = CallThreads(spec.max_concurrency)

    def _group_of(self, spec, groups):
        """The concurrency group a call runs in (None: the default group)."""
        group = spec.extra.get("concurrency_group")
        if group is not None and group not in groups:
            raise ValueError(f"{spec.function_name} was called in concurrency_group {group!r}, which "
                             f"the actor does not declare (its groups: {sorted(groups)})")
        return group

    def dispatch_call(self, spec, values, route=None):
        if self.actor is None:
            error = ActorDiedError("This worker hosts no actor (its constructor did not run here).")
            self._reply(spec, self.fixed_error_results(spec, error), False, route)
            return
        if spec.method_name == TERMINATE_METHOD:
            self._drain()
            self._exit_actor(spec, "the actor was terminated by __ray_terminate__", route)
        if self._loop is not None:
            # One wake-up of the loop thread per burst of calls, not one per call.
            inbox = self._async_inbox
            inbox.append((spec, values, route))
            if len(inbox) == 1:
                self._loop.call_soon_threadsafe(self._start_async_calls)
        elif self._group_pools is not None:
            try:
                group = self._group_of(spec, self._group_pools)
            except ValueError as exc:
                self._reply(spec, self.fixed_error_results(spec, exc), False, route)
                return
            pool = self._pool if group is None else self._group_pools[group]
            pool.submit(self.run_call, spec, values, route)
        elif self._pool is not None:
            self._pool.submit(self.run_call, spec, values, route)
        else:
            self.run_call(spec, values, route)

    def _drain(self):
        """Let the calls already started finish (graceful termination)."""
        for pool in [self._pool, *(self._group_pools or {}).values()]:
            if pool is not None:
                pool.shutdown(wait=True)
        if self._loop is not None:
            done = threading.Event()
            self._loop.call_soon_threadsafe(
                lambda: asyncio.ensure_future(_wait_all_tasks(self._loop, done)))
            done.wait(60)

    def run_call(self, spec, values, route=None):
        if self._cancelled and self._dropped(spec, route):
            return
        while True:
            start = self._begin_call(spec)
            try:
                outcome = (self.store_results(spec, self._invoke(spec, values)), None, False)
            except BaseException as exc:
                outcome = self._call_failed(spec, start, exc, route)
            if not self._retried_here(spec, start, outcome, route):
                self._end_call(spec, start, *outcome, route)
                break
        if self._cancelled:
            self._cancelled.discard(spec.task_id)   # it ran on, as Ray's sync actors do

    def _start_async_calls(self):
        """On the event loop: start every call waiting in the inbox, in arrival order."""
        inbox = self._async_inbox
        create_task = self._loop.create_task
        while inbox:
            create_task(self._run_async_call(*inbox.popleft()))

    async def _run_async_call(self, spec, values, route=None):
        if self._async_groups is not None:
            try:
                slots = self._async_group_slot(spec)
            except ValueError as exc:
                self._reply(spec, self.fixed_error_results(spec, exc), False, route)
                return
        else:
            slots = self._async_slots
            if slots is None:
                slots = self._async_slots = asyncio.Semaphore(self._async_limit)
        running = self._async_running
        running[spec.task_id] = asyncio.current_task()      # what rayx.cancel cancels
        try:
            async with slots:
                if self._cancelled and self._dropped(spec, route):
                    return
                while True:
                    start = self._begin_call(spec)
                    try:
                        result = self._invoke(spec, values)
                        if inspect.isawaitable(result):
                            result = await result
                        outcome = (self.store_results(spec, result), None, False)
                    except BaseException as exc:
                        outcome = self._call_failed(spec, start, exc, route)
                    if not self._retried_here(spec, start, outcome, route):
                        self._end_call(spec, start, *outcome, route)
                        return
        except asyncio.CancelledError:
            self._dropped(spec, route)         # cancelled while it waited for a slot
        finally:
            del running[spec.task_id]
            if self._cancelled:
                self._cancelled.discard(spec.task_id)

    def _async_group_slot(self, spec):
        """On the event loop: the semaphore of the call's concurrency group."""
        group = self._group_of(spec, self._async_groups)
        slots = self._async_group_slots.get(group)
        if slots is None:
            size = self._async_limit if group is None else self._async_groups[group]
            slots = self._async_group_slots[group] = asyncio.Semaphore(size)
        return slots

    def _retried_here(self, spec, start, outcome, route):
        """A direct call that raised a retryable error runs again at once (the raylet
        retries the calls it sent). True if it is to run again."""
        _, error, retryable = outcome
        if route is None or not retryable or not spec.retries_left():
            return False
        self.core.leave_task()
        self._events.record(spec, start, error)
        spec.take_retry()
        return True

    def _begin_call(self, spec):
        self.core.enter_task(TaskID(spec.task_id), spec.function_name, spec.job_id, spec.actor_id)
        return _now()

    def _invoke(self, spec, values):
        args, kwargs = self.resolve_args(spec, values)
        return getattr(self.actor, spec.method_name)(*args, **kwargs)

    def _call_failed(self, spec, start, exc, route=None):
        """(results, error class, retryable) for a call that raised; exit_actor() ends here."""
        if isinstance(exc, ActorExit):
            self._events.record(spec, start, ActorExit)
            self._exit_actor(spec, "the actor called exit_actor()", route)
        if isinstance(exc, asyncio.CancelledError) and spec.task_id in self._cancelled:
            return self._cancelled_results(spec), TaskCancelledError, False
        if not isinstance(exc, (Exception, asyncio.CancelledError)):
            raise exc
        # Keep the class only: keeping the exception would keep its frames alive.
        return self.error_results(spec, exc), type(exc), spec.retry_exceptions and self._retryable(spec, exc)

    def _retryable(self, spec, exc):
        """retry_exceptions=True retries every exception; a list only its classes (and
        subclasses). The list is unpickled once per distinct list, not per task."""
        blob = spec.extra.get("retry_exceptions")
        if blob is None:
            return True
        classes = self._retry_classes.get(blob)
        if classes is None:
            classes = self._retry_classes[blob] = cloudpickle.loads(blob)
        return isinstance(exc, classes)

    def _end_call(self, spec, start, results, error, retryable, route=None):
        self.core.leave_task()
        self._events.record(spec, start, error)
        self._reply(spec, results, retryable, route)

    def _exit_actor(self, spec, reason, route=None):
        """End this actor for good: the current call fails, the raylet is told, the process exits."""
        error = ActorDiedError(f"The actor {self.actor_spec.actor_class_name()} is dead: {reason}.")
        if spec.method_name != TERMINATE_METHOD:
            results = self.fixed_error_results(spec, error)
        else:
            results = self.store_results(spec, None)
        self._events.flush()
        exit_message = (p.ACTOR_EXIT, spec.actor_id, reason, b"")
        try:
            # The raylet must see the exit before it could route another call here,
            # and before a direct caller (told next) asks it where the actor went.
            if route is None:
                self.core.conn.send_all_now([(p.TASK_DONE, spec.task_id, results, False), exit_message])
            else:
                self.core.conn.send_all_now([exit_message])
                route.send_now((p.DIRECT_DONE, spec.task_id, results))
        except Exception:
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _wait_all_tasks(loop, done):
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks(loop) if t is not current]
    if pending:
        await asyncio.wait(pending, timeout=60)
    done.set()


def _ignore(*_):
    pass


def _user_frames(tb):
    """Skip the executor's own frame so the traceback starts in the user's code."""
    return tb.tb_next if tb is not None and tb.tb_next is not None else tb


def _short(value):
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _set_visible_gpus(gpu_ids):
    if gpu_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    elif "CUDA_VISIBLE_DEVICES" in os.environ:     # cheap when unset (every leased task)
        del os.environ["CUDA_VISIBLE_DEVICES"]
