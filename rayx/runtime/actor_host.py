"""How a worker hosts an actor, once it has run the actor's constructor: the
calls' concurrency, running them, and the actor's end.

Calls run in arrival order on the worker's main thread, or on up to
``max_concurrency`` threads (threaded actors, ``rayx.runtime.call_threads``),
or as asyncio tasks on one event-loop thread (actors with ``async def``
methods). An actor that declares ``concurrency_groups`` gets one set of
threads (threaded) or one semaphore (async) per group, plus the default group
of ``max_concurrency``; a call names its group in its spec's ``extra``.

A call came through the raylet (``route`` None: answered with TASK_DONE) or was
pushed by a caller on its link (answered there, with PUSH_DONE; retries of
retryable exceptions then happen here, in place: ``TaskResults.retried_here``).
The actor ends for good when a method calls ``rayx.actor.exit_actor()``
(``ActorExit``) or ``__ray_terminate__`` is called: the raylet is told, and
the process exits.
"""
import asyncio
import collections
import inspect
import os
import sys
import threading

from rayx import messages
from rayx._core.ids import TaskID
from rayx.exceptions import ActorDiedError, TaskCancelledError
from rayx.runtime import task_context
from rayx.runtime.call_threads import CallThreads
from rayx.runtime.task_events import now

TERMINATE_METHOD = "__ray_terminate__"

_TASK_DONE = messages.TASK_DONE
_ACTOR_EXIT = messages.ACTOR_EXIT
_PUSH_DONE = messages.PUSH_DONE


class ActorExit(BaseException):
    """Raised by ``rayx.actor.exit_actor()`` to end the actor from inside a method."""


def is_async_class(cls):
    """The class has ``async def`` methods (or async generators): it runs as an async actor."""
    return any(inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
               for _, member in inspect.getmembers(cls, predicate=inspect.isfunction))


class ActorHost:
    """The actor this worker hosts, and how its calls run."""

    def __init__(self, instance, creation_spec, cls, core, results, cancellations):
        self.instance = instance
        self.creation_spec = creation_spec
        self.core = core
        self.results = results            # TaskResults
        self.events = results.events
        self.cancellations = cancellations
        self._pool = None                 # threaded actors
        self._group_pools = None          # threaded actors with concurrency groups: name -> CallThreads
        self._loop = None                 # async actors
        self._async_slots = None          # an asyncio.Semaphore, made on the loop
        self._async_limit = 1000
        self._async_groups = None         # async actors with concurrency groups: name -> size
        self._async_group_slots = {}      # name -> asyncio.Semaphore, made on the loop
        self._async_inbox = collections.deque()   # calls handed to the event loop, not started
        self._async_running = {}          # task id -> asyncio task of each async call started
        self._setup_concurrency(creation_spec, cls)

    def _setup_concurrency(self, spec, cls):
        groups = spec.extra.get("concurrency_groups")
        if spec.is_asyncio or is_async_class(cls):
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

    def is_async(self):
        return self._loop is not None

    def cancel_async(self, task_id):
        """rayx.cancel of a call of an async actor: its asyncio task is cancelled."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_async_call, task_id)

    def _cancel_async_call(self, task_id):
        task = self._async_running.get(task_id)
        if task is not None:
            task.cancel()

    @staticmethod
    def _group_of(spec, groups):
        """The concurrency group a call runs in (None: the default group)."""
        group = spec.extra.get("concurrency_group")
        if group is not None and group not in groups:
            raise ValueError(f"{spec.function_name} was called in concurrency_group {group!r}, which "
                             f"the actor does not declare (its groups: {sorted(groups)})")
        return group

    # ------------------------------------------------------------ calls

    def dispatch(self, spec, values, route=None):
        """Start a call (or queue it for its threads or the event loop)."""
        if spec.method_name == TERMINATE_METHOD:
            self._drain()
            self.end(spec, "the actor was terminated by __ray_terminate__", route)
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
                self.results.reply(spec, self.results.of_error(spec, exc), False, route)
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
        cancellations = self.cancellations
        if cancellations and cancellations.dropped(spec, route, self.results):
            return
        retried_here = self.results.retried_here
        while True:
            start = self._begin_call(spec)
            try:
                outcome = (self.results.of_return(spec, self._invoke(spec, values)), None, False)
            except BaseException as exc:
                outcome = self._call_failed(spec, start, exc, route)
            if not retried_here(spec, start, outcome, route):
                self._end_call(spec, start, *outcome, route)
                break
        if cancellations:
            cancellations.discard(spec.task_id)   # it ran on, as Ray's sync actors do

    def _start_async_calls(self):
        """On the event loop: start every call waiting in the inbox, in arrival order."""
        inbox = self._async_inbox
        create_task = self._loop.create_task
        while inbox:
            create_task(self._run_async_call(*inbox.popleft()))

    async def _run_async_call(self, spec, values, route=None):
        results = self.results
        if self._async_groups is not None:
            try:
                slots = self._async_group_slot(spec)
            except ValueError as exc:
                results.reply(spec, results.of_error(spec, exc), False, route)
                return
        else:
            slots = self._async_slots
            if slots is None:
                slots = self._async_slots = asyncio.Semaphore(self._async_limit)
        running = self._async_running
        running[spec.task_id] = asyncio.current_task()      # what rayx.cancel cancels
        cancellations = self.cancellations
        try:
            async with slots:
                if cancellations and cancellations.dropped(spec, route, results):
                    return
                while True:
                    start = self._begin_call(spec)
                    try:
                        result = self._invoke(spec, values)
                        if inspect.isawaitable(result):
                            result = await result
                        outcome = (results.of_return(spec, result), None, False)
                    except BaseException as exc:
                        outcome = self._call_failed(spec, start, exc, route)
                    if not results.retried_here(spec, start, outcome, route):
                        self._end_call(spec, start, *outcome, route)
                        return
        except asyncio.CancelledError:
            cancellations.dropped(spec, route, results)    # cancelled while it waited for a slot
        finally:
            del running[spec.task_id]
            if cancellations:
                cancellations.discard(spec.task_id)

    def _async_group_slot(self, spec):
        """On the event loop: the semaphore of the call's concurrency group."""
        group = self._group_of(spec, self._async_groups)
        slots = self._async_group_slots.get(group)
        if slots is None:
            size = self._async_limit if group is None else self._async_groups[group]
            slots = self._async_group_slots[group] = asyncio.Semaphore(size)
        return slots

    @staticmethod
    def _begin_call(spec):
        task_context.enter_task(TaskID(spec.task_id), spec.function_name, spec.job_id, spec.actor_id)
        return now()

    def _invoke(self, spec, values):
        args, kwargs = self.results.resolve_args(spec, values)
        return getattr(self.instance, spec.method_name)(*args, **kwargs)

    def _call_failed(self, spec, start, exc, route=None):
        """(results, error class, retryable) for a call that raised; exit_actor() ends here."""
        if isinstance(exc, ActorExit):
            self.events.record(spec, start, ActorExit)
            self.end(spec, "the actor called exit_actor()", route)
        if isinstance(exc, asyncio.CancelledError) and spec.task_id in self.cancellations:
            return self.results.of_cancel(spec), TaskCancelledError, False
        if not isinstance(exc, (Exception, asyncio.CancelledError)):
            raise exc
        # Keep the class only: keeping the exception would keep its frames alive.
        return self.results.of_exception(spec, exc), type(exc), self.results.retryable(spec, exc)

    def _end_call(self, spec, start, results, error, retryable, route=None):
        task_context.leave_task()
        self.events.record(spec, start, error)
        self.results.reply(spec, results, retryable, route)

    def end(self, spec, reason, route=None):
        """End this actor for good (``spec``: the call that ends it)."""
        end_actor(self.core, self.results, self.creation_spec, spec, reason, route)


def end_actor(core, results, creation_spec, spec, reason, route=None):
    """End the actor of ``creation_spec`` for good: the call ``spec`` fails (unless it is
    ``__ray_terminate__``), the raylet is told, the process exits."""
    error = ActorDiedError(f"The actor {creation_spec.actor_class_name()} is dead: {reason}.")
    if spec.method_name != TERMINATE_METHOD:
        out = results.of_error(spec, error)
    else:
        out = results.of_return(spec, None)
    results.events.flush()
    exit_message = _ACTOR_EXIT(spec.actor_id, reason, b"")
    try:
        # The raylet must see the exit before it could route another call here,
        # and before a caller on a link (told next) asks it where the actor went.
        if route is None:
            core.conn.send_all_now([_TASK_DONE(spec.task_id, out, False), exit_message])
        else:
            core.conn.send_all_now([exit_message])
            route.send_now(_PUSH_DONE(spec.task_id, out))
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
