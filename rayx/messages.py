"""The messages between a node's raylet and its drivers and workers, and between
two processes of one node (actor calls and leased tasks pushed to a worker): one
declaration each, shared by the sender and the receiver.

On the wire a message is a tuple ``(tag, field, ...)`` encoded by the Cython
codec (``rayx._core.codec``) and framed with a 4-byte length. Nothing on these
sockets is ever unpickled: values travel as opaque serialized bytes that only
the process that asked for them deserializes.

A sender builds a message with its declaration, ``SUBMIT(spec)``. A receiver
maps declarations to handlers with ``handlers({SUBMIT: self.on_submit, ...})``
and calls ``table[message[0]](*message[1:])`` (after any leading arguments of
its own, such as the raylet's connection): the fields reach the handler's
parameters by position. ``handlers`` checks, when the table is built, that each
handler's parameters are the message's fields, by name and in order, with the
optional fields last and defaulted. So a field added, removed or reordered in
one place fails at start-up (and in the test suite), never as a shifted value
on the wire.

Each field also declares its kind (``object_id:id``, ``size:count``; the kinds
are the ``_KINDS`` below): what a receiver that does not trust its sender
checks with ``check(message)`` before any handler sees the message. A message
that fails is ``BadMessage``, and the receiver closes that connection with the
reason logged (the raylet's client sockets, a worker's link). The kinds and
their limits (ids of at most 64 bytes, at most 2^20 ids in a list, 10,000
returns a task) are compiled, in ``rayx._core.checks``.
"""
import inspect

from rayx._core import checks

__all__ = ["Message", "BadMessage", "handlers", "check", "ALL", "MAX_NUM_RETURNS"]

MAX_FRAME_BYTES = 128 << 20    # one frame from an untrusted sender (large values go by the arena)
MAX_NUM_RETURNS = checks.MAX_NUM_RETURNS


class BadMessage(ValueError):
    """A message that does not match its declaration."""


# kind -> (its code in rayx._core.checks, what a value of it is, for the error). The
# checks are compiled, as they run on every message a receiver checks.
_KINDS = {
    "id": (checks.KIND_ID, f"an id (1 to {checks.MAX_ID_BYTES} bytes)"),
    "ids": (checks.KIND_IDS, f"a list of at most {checks.MAX_ITEMS} ids"),
    "count": (checks.KIND_COUNT, "a whole number >= 0"),
    "flag": (checks.KIND_FLAG, "a bool"),
    "text": (checks.KIND_TEXT, f"a string of at most {checks.MAX_TEXT} characters"),
    "blob": (checks.KIND_BLOB, "bytes"),
    "blob?": (checks.KIND_BLOB_OR_NONE, "bytes or None"),
    "info": (checks.KIND_INFO, f"a dict of at most {checks.MAX_ENTRIES} entries"),
    "spec": (checks.KIND_SPEC, f"a TaskSpec with 16-byte task and actor ids, a 4-byte job id, "
                               f"0 to {checks.MAX_NUM_RETURNS} returns, attempt >= 0, max_retries >= -1"),
    "values": (checks.KIND_VALUES, "a dict of object id -> bytes or None"),
    "results": (checks.KIND_RESULTS, f"a list of at most {checks.MAX_NUM_RETURNS} (object_id, data, "
                                     "size, nested_refs, is_error)"),
    "args": (checks.KIND_ARGS, f"a list of at most {checks.MAX_ARGS} arguments"),
    "any": (checks.KIND_ANY, "anything"),
}


class Message:
    """One kind of message: its tag on the wire, its fields in order, and which
    trailing fields a sender may leave out (the receiver's defaults apply)."""

    __slots__ = ("tag", "name", "fields", "optional", "direction", "doc", "_checks", "is_valid")

    def __init__(self, tag, name, fields, *, optional="", direction, doc):
        self.tag = tag
        self.name = name
        required = [_field(item) for item in fields.split()]
        extra = [_field(item) for item in optional.split()]
        self.fields = tuple(field for field, _ in required)
        self.optional = tuple(field for field, _ in extra)
        self._checks = tuple((field, kind) for field, kind in required + extra)
        self.is_valid = checks.Validator(len(required), [_KINDS[kind][0] for _, kind in required + extra])
        self.direction = direction
        self.doc = doc

    def check(self, message):
        """Raise BadMessage, naming the field, unless ``message``'s fields have their
        declared kinds."""
        if self.is_valid(message):
            return
        count = len(message) - 1
        if not len(self.fields) <= count <= len(self._checks):
            raise BadMessage(f"{self.name} has {len(self.fields)} to {len(self._checks)} fields, "
                             f"got {count}")
        for (field, kind), value in zip(self._checks, message[1:]):
            if not checks.is_kind(_KINDS[kind][0], value):
                raise BadMessage(f"{self.name}.{field} must be {_KINDS[kind][1]}, got "
                                 f"{type(value).__name__} {repr(value)[:60]}")
        raise BadMessage(f"a {self.name} message must be a tuple, got {type(message).__name__}")

    def __call__(self, *values):
        """The message with these field values, ready for ``send``."""
        return (self.tag,) + values

    def __repr__(self):
        return f"<message {self.name} ({', '.join(self.fields + self.optional)})>"


def _field(item):
    """("name", "kind") of a declaration's "name:kind"."""
    field, sep, kind = item.partition(":")
    if not sep or kind not in _KINDS:
        raise AssertionError(f"field {item!r} needs a kind among {sorted(_KINDS)}")
    return field, kind


ALL = {}


def check(message):
    """Raise BadMessage unless ``message`` (a decoded frame) is a declared message whose
    fields have their declared kinds."""
    try:
        declared = ALL[message[0]]
        valid = declared.is_valid(message)
    except (KeyError, TypeError, IndexError):
        raise BadMessage(f"not a declared message: {repr(message)[:60]}") from None
    if not valid:
        declared.check(message)


def _declare(tag, name, fields, direction, doc, optional=""):
    message = Message(tag, name, fields, optional=optional, direction=direction, doc=doc)
    if tag in ALL:
        raise AssertionError(f"message tag {tag} declared twice ({ALL[tag].name}, {name})")
    ALL[tag] = message
    return message


# ------------------------------------------------------- client -> raylet

REGISTER = _declare(1, "REGISTER", "kind:text worker_id:blob pid:count job_id:blob info:info", "client -> raylet",
                    'kind is "driver" or "worker"; info a dict (listen path, ...)')
SUBMIT = _declare(2, "SUBMIT", "spec:spec", "client -> raylet", "a TaskSpec to schedule")
PUT = _declare(3, "PUT", "object_id:id data:blob? size:count nested_refs:ids", "client -> raylet",
               "an object made by the sender: data inline, or None when already sealed in the "
               "arena. held: the sender holds a ref from now on (as a SUBMIT makes its sender hold "
               "the returns); a worker registering results of a pushed call or task sends "
               "False, the caller says whether it holds them",
               optional="is_error:flag held:flag")
WAIT = _declare(4, "WAIT", "request_id:count object_ids:ids num_ready:count with_data:flag", "client -> raylet",
                "answer (WAIT_REPLY) when num_ready of the ids are ready. fetch: pull remote "
                "objects here; notify: after the reply, send READY_NOTE for the rest as they "
                "become ready", optional="fetch:flag notify:flag")
CANCEL_WAIT = _declare(5, "CANCEL_WAIT", "request_id:count", "client -> raylet", "the waiter gave up")
TASK_DONE = _declare(6, "TASK_DONE", "task_id:id results:results retryable:flag", "client -> raylet",
                     "results: [(object_id, data | None, size, nested_refs, is_error)]; retryable: "
                     "the error raised may be retried. exiting: the worker exits now (max_calls "
                     "reached)", optional="exiting:flag")
REFS = _declare(7, "REFS", "added:ids removed:ids", "client -> raylet",
                "object ids the sender now holds, and no longer holds")
REQUEST = _declare(8, "REQUEST", "request_id:count op:text args:args", "client -> raylet",
                   "a small control call: op names a raylet method, answered with REPLY")
ACTOR_EXIT = _declare(9, "ACTOR_EXIT", "actor_id:id reason:text death_data:blob?", "client -> raylet",
                      "the actor ends itself (no restart)")
GIVE_BACK = _declare(10, "GIVE_BACK", "task_ids:ids", "client -> raylet",
                     "queued tasks the worker will not start (it is about to block in get)")
LISTENING = _declare(11, "LISTENING", "path:text", "client -> raylet",
                     "the worker takes pushed actor calls and leased tasks on this socket")
NOW_RUNNING = _declare(12, "NOW_RUNNING", "name:text", "client -> raylet",
                       "a leased worker starts a task of this name (its log prefix)")
RETURN_LEASES = _declare(13, "RETURN_LEASES", "worker_ids:ids", "client -> raylet",
                         'leases (REQUEST "lease") the caller gives back')
LINEAGE = _declare(14, "LINEAGE", "spec:spec", "client -> raylet",
                   "the TaskSpec of a leased task whose results the raylet is told of next: "
                   "recorded in the GCS lineage before a ref to them can leave the process")

# ------------------------------------------------------- raylet -> client

REGISTERED = _declare(50, "REGISTERED", "info:info", "raylet -> client",
                      "node_id, arena path, job_id, session_dir, ...")
EXECUTE = _declare(51, "EXECUTE", "spec:spec values:values gpu_ids:any", "raylet -> worker",
                   "run this TaskSpec; values {object_id: data | None} of its ref arguments")
WAIT_REPLY = _declare(52, "WAIT_REPLY", "request_id:count ready:any", "raylet -> client",
                      "ready: [(object_id, data | None, in_arena)]: inline bytes when asked for "
                      "(with_data), in_arena when the reader maps it from the arena")
REPLY = _declare(53, "REPLY", "request_id:count ok:flag result:any", "raylet -> client", "the answer to a REQUEST")
LOG = _declare(54, "LOG", "stream:count text:text", "raylet -> driver",
               "worker output (stream 1 or 2), already prefixed with the task name and pid")
EXIT = _declare(55, "EXIT", "reason:text", "raylet -> worker", "exit now")
CANCEL = _declare(56, "CANCEL", "task_id:id", "raylet -> worker", "interrupt that task if it runs here")
READY_NOTE = _declare(57, "READY_NOTE", "object_id:id", "raylet -> client",
                      "an object a finished WAIT (notify) asked about is ready")

# ------------------------------------------- caller <-> worker, one node
# Work a caller pushes straight to a worker of its node, over a link
# (``rayx.runtime.links``): calls to an actor that worker hosts
# (``rayx.runtime.actor_calls``), and tasks to a worker the raylet lent the caller
# (``rayx.runtime.leased_tasks``).

PUSH_TASK = _declare(70, "PUSH_TASK", "spec:spec values:values", "caller -> worker",
                     "run this actor call or leased task; values {object_id: data | None}")
PUSH_DONE = _declare(71, "PUSH_DONE", "task_id:id results:results", "worker -> caller",
                     "results as in TASK_DONE")
PUSH_GIVE_BACK = _declare(72, "PUSH_GIVE_BACK", "task_ids:ids", "worker -> caller",
                          "leased tasks the worker will not start (it is about to block in get)")
PUSH_CANCEL = _declare(73, "PUSH_CANCEL", "task_id:id force:flag", "caller -> worker",
                       "rayx.cancel of a leased task or actor call")


def handlers(table, leading=()):
    """``{tag: handler}`` for ``{Message: handler}``, after checking each handler's
    signature: first the ``leading`` parameters the receiver passes itself, then
    the message's fields by name, then its optional fields, defaulted."""
    out = {}
    for message, handler in table.items():
        _check_signature(message, handler, tuple(leading))
        out[message.tag] = handler
    return out


def _check_signature(message, handler, leading):
    params = list(inspect.signature(handler).parameters.values())
    names = tuple(p.name for p in params)
    expected = leading + message.fields + message.optional
    if names != expected:
        raise TypeError(f"{handler.__qualname__} takes ({', '.join(names)}) but {message.name} "
                        f"carries ({', '.join(expected)})")
    for param in params[len(leading) + len(message.fields):]:
        if param.default is inspect.Parameter.empty:
            raise TypeError(f"{handler.__qualname__}: {message.name}'s optional field "
                            f"{param.name} needs a default")
