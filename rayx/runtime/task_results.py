"""What a worker makes of one run of user code, and where it sends it: the
arguments it resolves, the results it stores (inline or into the arena), the
RayTaskError an exception becomes (carrying the remote traceback, stored as the
value of every return), whether that error may be retried, and the reply to
whoever sent the work (TASK_DONE to the raylet, or PUSH_DONE on the caller's
link). Normal tasks (``rayx.runtime.executor``) and actor calls
(``rayx.runtime.actor_host``) share all of it, and ``Cancellations``: the runs
``rayx.cancel`` reached in this worker.
"""
import os
import traceback

import cloudpickle

from rayx import messages
from rayx._core import codec
from rayx.exceptions import RayTaskError, TaskCancelledError
from rayx.object_ref import ObjectRef
from rayx.runtime import serialization, task_context

ARG_RESTORE_TIMEOUT = 60.0

# Hot path: built inline with the declaration's tag (tests/test_messages.py checks
# every such tuple against its declaration).
_TASK_DONE_TAG = messages.TASK_DONE.tag
_PUT_TAG = messages.PUT.tag
_LINEAGE_TAG = messages.LINEAGE.tag
_NORMAL_TASK = codec.NORMAL_TASK
_PUSH_DONE_TAG = messages.PUSH_DONE.tag


class TaskResults:
    """The results of runs in this worker, and their replies.

    ``inbox_empty()`` says whether no other work waits here: a reply then goes out
    at once, else with the next flush (within a millisecond), so a stream of
    calls costs few writes.
    """

    def __init__(self, core, events, inbox_empty):
        self.core = core
        self.events = events
        self._inbox_empty = inbox_empty
        self._retry_classes = {}     # pickled retry_exceptions list -> tuple of classes

    # ------------------------------------------------------------ arguments

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
                    # Not in the arena (spilled meanwhile, or held by the raylet): the
                    # raylet brings it.
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

    # ------------------------------------------------------------ results

    def of_return(self, spec, result):
        """The result entries (object id, data | None, size, nested refs, is_error) of a
        run that returned ``result``."""
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

    def of_exception(self, spec, exc):
        """The result entries of a run that raised ``exc``: a RayTaskError with the remote
        traceback as the value of every return."""
        tb = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
        # Pickling never fails (what cannot be pickled of ``exc`` is left out, and said).
        error = RayTaskError(spec.function_name, tb, exc, pid=os.getpid(),
                             ip=self.core.node_info.get("node_ip_address"))
        return self.of_error(spec, error)

    @staticmethod
    def of_error(spec, error):
        """The result entries of a run that ends with ``error`` (raised by ``get``)."""
        data = serialization.serialize_error(error).to_bytes()
        return [(object_id, data, len(data), (), True) for object_id in spec.return_ids()]

    def of_cancel(self, spec):
        return self.of_error(spec, TaskCancelledError(
            spec.task_id.hex(), f"The task {spec.function_name} was cancelled with rayx.cancel"))

    def retryable(self, spec, exc):
        """May the run that raised ``exc`` be retried? retry_exceptions=True retries every
        exception; a list only its classes (and subclasses). The list is unpickled once
        per distinct list, not per task."""
        if not spec.retry_exceptions:
            return False
        blob = spec.extra.get("retry_exceptions")
        if blob is None:
            return True
        classes = self._retry_classes.get(blob)
        if classes is None:
            classes = self._retry_classes[blob] = cloudpickle.loads(blob)
        return isinstance(exc, classes)

    def retried_here(self, spec, start, outcome, route):
        """A pushed call or task that raised a retryable error runs again at once, here
        (the raylet retries the work it sent). True if it is to run again."""
        _, error, retryable = outcome
        if route is None or not retryable or not spec.retries_left():
            return False
        task_context.leave_task()
        self.events.record(spec, start, error)
        spec.take_retry()
        return True

    # ------------------------------------------------------------ replies

    def report(self, message):
        """Send a message to the raylet: at once when no other work waits here, else
        with the next flush."""
        if self._inbox_empty():
            self.core.conn.send_now(message)
        else:
            self.core.conn.defer(message)

    def reply(self, spec, results, retryable, route):
        """Results of a run to whoever sent it: the raylet (``route`` None) or the caller
        that pushed it (``route``, its link)."""
        if route is None:
            self.report((_TASK_DONE_TAG, spec.task_id, results, retryable))
            return
        conn = self.core.conn
        # Results in the arena or holding refs are registered with the raylet here (the
        # caller registers small plain ones itself, if ever needed). The raylet must
        # hear of them, and of refs this call made or kept, before the caller could
        # pass them on or drop its own refs.
        urgent = bool(spec.nested_refs) or bool(self.core.refs.events)
        lineage = spec.task_type == _NORMAL_TASK    # a leased task's: rebuildable wherever its refs go
        for object_id, data, size, nested, is_error in results:
            if data is None or nested:
                if lineage:
                    conn.defer((_LINEAGE_TAG, spec))
                    lineage = False
                conn.defer((_PUT_TAG, object_id, data, size, nested, is_error, False))
                urgent = True
        if urgent:
            conn.flush()
        message = (_PUSH_DONE_TAG, spec.task_id, results)
        if self._inbox_empty():
            route.send(message)
        else:
            route.defer(message)


class Cancellations(set):
    """The ids of the runs ``rayx.cancel`` reached in this worker, until they end (a
    set: its tests cost no Python call on the path of every task)."""

    __slots__ = ()

    def dropped(self, spec, route, results):
        """Reply TaskCancelledError (through ``results``) if rayx.cancel reached this run
        before it started; True if so."""
        if spec.task_id not in self:
            return False
        self.discard(spec.task_id)
        results.reply(spec, results.of_cancel(spec), False, route)
        return True


def _user_frames(tb):
    """Skip the runtime's own frame so the traceback starts in the user's code."""
    return tb.tb_next if tb is not None and tb.tb_next is not None else tb


def _short(value):
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
