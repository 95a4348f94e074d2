"""Every exception rayx raises, named as Ray names them.

This module imports nothing of rayx (every other module may import it).
Errors from the compiled core cross into Python in one place each
(``rayx._core.store.check_status`` and the codec's decoder), and they map onto
the classes below. ``RayTaskError`` is special: ``as_instanceof_cause`` builds a
class that derives from both RayTaskError and the user's exception class, so
``except ValueError`` still catches a ValueError raised inside a task.
"""


class RayError(Exception):
    """Base of every rayx error."""


RayxError = RayError


class RaySystemError(RayError):
    """An internal invariant broke; the message says which."""


class CodecError(RayError, ValueError):
    """Bytes handed to the task-spec or message codec are malformed or truncated."""


class ObjectStoreFullError(RayError, MemoryError):
    """The node's shared-memory arena cannot hold an object, even after eviction and spilling."""


class ObjectExistsError(RayError, KeyError):
    """An object with this id is already in the arena (objects are immutable)."""


class ObjectNotFoundError(RayError, KeyError):
    """The arena holds no object with this id."""


class ArenaError(RayError, OSError):
    """The shared-memory arena could not be created, mapped or used."""


class GetTimeoutError(RayError, TimeoutError):
    """``get`` (or ``wait``) ran out of its ``timeout``."""


# Why rayx.cancel(ref, force=True) of an actor call raises ValueError (as Ray).
ACTOR_CALL_FORCE_CANCEL = ("force=True is not supported for actor calls (the actor's state would "
                           "be lost); cancel without force, or end the actor with rayx.kill()")


class TaskCancelledError(RayError):
    """The task was cancelled with ``rayx.cancel`` before it produced its result."""

    def __init__(self, task_id=None, message=None):
        self.task_id = task_id
        super().__init__(message or f"Task {task_id} was cancelled")

    @classmethod
    def before_it_ran(cls, spec):
        return cls(spec.task_id.hex(), f"The task {spec.function_name} was cancelled before it ran")


class WorkerCrashedError(RayError):
    """The worker running the task died (and no retries were left)."""

    @classmethod
    def for_task(cls, spec, how, pid, node_id, exit_code):
        return cls(f"The worker running {spec.function_name}() {how} (pid={pid}, "
                   f"node={node_id.hex()[:16]}, exit code={exit_code}); the task ran "
                   f"{spec.attempt + 1} time(s) and no retries are left "
                   f"(max_retries={spec.max_retries}).")


class NodeDiedError(RayError):
    """The node a task or object lived on died."""


class ObjectLostError(RayError):
    """An object's every copy is gone and it could not be rebuilt from lineage."""

    def __init__(self, object_ref_hex="", message=None):
        self.object_ref_hex = object_ref_hex
        super().__init__(message or f"Object {object_ref_hex} is lost and could not be reconstructed")


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died."""


class ObjectReconstructionFailedError(ObjectLostError):
    """An object's every copy is gone and its lineage cannot rebuild it (made by an
    actor call, or its lineage is not in the GCS)."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    """An object's every copy is gone and its task's retries are used up."""


class RayActorError(RayError):
    """An actor could not run the call: it died, or was never created."""

    def __init__(self, message="The actor died unexpectedly before finishing this task.", actor_id=None, cause=None):
        self.actor_id = actor_id
        self.cause = cause
        super().__init__(message)


class ActorDiedError(RayActorError):
    """The actor is dead: killed, crashed, or its constructor raised."""


class ActorUnavailableError(RayActorError):
    """The actor is restarting or unreachable for now."""


class RuntimeEnvSetupError(RayError):
    """The task's runtime environment could not be set up."""


class UnserializableException(RayError):
    """An exception raised remotely could not be pickled there or rebuilt here; this
    one carries its text and remote traceback instead."""

    def __init__(self, original_stack_trace):
        self.original_stack_trace = original_stack_trace
        super().__init__(original_stack_trace)


class RayTaskError(RayError):
    """An exception raised inside a remote task, carried back with its traceback.

    ``cause`` is the user's exception object (when it could be pickled) and
    ``traceback_str`` the formatted remote traceback. ``as_instanceof_cause``
    returns an instance that is also an instance of the cause's class.
    """

    def __init__(self, function_name, traceback_str, cause=None, proctitle=None, pid=None, ip=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle
        self.pid = pid
        self.ip = ip
        # Not super(): in a class derived with the cause's class (as_instanceof_cause) that
        # would run the cause's __init__, which wants its own arguments.
        Exception.__init__(self, self._message())

    def _message(self):
        where = f" (pid={self.pid}, ip={self.ip})" if self.pid is not None else ""
        return f"{type(self.cause).__name__ if self.cause is not None else 'Error'} in {self.function_name}(){where}\n{self.traceback_str}"

    def __str__(self):
        return self._message()

    def __reduce__(self):
        # Any pickler: the cause is pickled along. rayx's own picklers reduce a
        # RayTaskError in a way of their own (``rayx.runtime.serialization``: the cause
        # travels as bytes of its own, so one that cannot be rebuilt does not take the
        # traceback down with it).
        return (RayTaskError.rebuilt, (self.function_name, self.traceback_str, self.cause,
                                       self.pid, self.ip))

    @staticmethod
    def rebuilt(function_name, traceback_str, cause, pid, ip):
        """A RayTaskError as unpickled: also an instance of its cause's class."""
        return RayTaskError(function_name, traceback_str, cause, None, pid, ip).as_instanceof_cause()

    def as_instanceof_cause(self):
        """Return this error as an object that is also an instance of the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or isinstance(self, cause_cls) or not issubclass(cause_cls, BaseException):
            return self
        if issubclass(cause_cls, RayTaskError):
            return self.cause
        name = f"RayTaskError({cause_cls.__name__})"
        try:
            derived = _derived_classes.get(cause_cls)
            if derived is None:
                derived = type(name, (RayTaskError, cause_cls), {
                    "__init__": _derived_init,
                    "__str__": RayTaskError.__str__,
                    "__reduce__": RayTaskError.__reduce__,
                    "__module__": cause_cls.__module__,
                })
                _derived_classes[cause_cls] = derived
            err = derived.__new__(derived)
            _derived_init(err, self.function_name, self.traceback_str, self.cause, None, self.pid, self.ip)
            return err
        except TypeError:  # e.g. a cause class with an incompatible layout
            return self


_derived_classes = {}


def _derived_init(self, function_name, traceback_str, cause=None, proctitle=None, pid=None, ip=None):
    # The cause's attributes, so that ``except MyError as e`` reads e.code as raised
    # (RayTaskError's own attributes win a clash; ``e.cause`` has them all).
    self.__dict__.update(getattr(cause, "__dict__", None) or {})
    RayTaskError.__init__(self, function_name, traceback_str, cause, proctitle, pid, ip)
    try:
        self.args = cause.args if cause is not None else ()
    except Exception:
        pass


class PendingCallsLimitExceeded(RayError):
    """An actor handle already has ``max_pending_calls`` calls whose results are not in."""


__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and issubclass(value, BaseException)]
