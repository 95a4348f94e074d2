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
"""
import inspect

__all__ = ["Message", "handlers", "ALL"]


class Message:
    """One kind of message: its tag on the wire, its fields in order, and which
    trailing fields a sender may leave out (the receiver's defaults apply)."""

    __slots__ = ("tag", "name", "fields", "optional", "direction", "doc")

    def __init__(self, tag, name, fields, *, optional=(), direction, doc):
        self.tag = tag
        self.name = name
        self.fields = tuple(fields.split())
        self.optional = tuple(optional.split()) if isinstance(optional, str) else tuple(optional)
        self.direction = direction
        self.doc = doc

    def __call__(self, *values):
        """The message with these field values, ready for ``send``."""
        return (self.tag,) + values

    def __repr__(self):
        return f"<message {self.name} ({', '.join(self.fields + self.optional)})>"


ALL = {}


def _declare(tag, name, fields, direction, doc, optional=()):
    message = Message(tag, name, fields, optional=optional, direction=direction, doc=doc)
    if tag in ALL:
        raise AssertionError(f"message tag {tag} declared twice ({ALL[tag].name}, {name})")
    ALL[tag] = message
    return message


# ------------------------------------------------------- client -> raylet

REGISTER = _declare(1, "REGISTER", "kind worker_id pid job_id info", "client -> raylet",
                    'kind is "driver" or "worker"; info a dict (listen path, ...)')
SUBMIT = _declare(2, "SUBMIT", "spec", "client -> raylet", "a TaskSpec to schedule")
PUT = _declare(3, "PUT", "object_id data size nested_refs", "client -> raylet",
               "an object made by the sender: data inline, or None when already sealed in the "
               "arena. held: the sender holds a ref from now on (as a SUBMIT makes its sender hold "
               "the returns); a worker registering results of a pushed call or task sends "
               "False, the caller says whether it holds them",
               optional="is_error held")
WAIT = _declare(4, "WAIT", "request_id object_ids num_ready with_data", "client -> raylet",
                "answer (WAIT_REPLY) when num_ready of the ids are ready. fetch: pull remote "
                "objects here; notify: after the reply, send READY_NOTE for the rest as they "
                "become ready", optional="fetch notify")
CANCEL_WAIT = _declare(5, "CANCEL_WAIT", "request_id", "client -> raylet", "the waiter gave up")
TASK_DONE = _declare(6, "TASK_DONE", "task_id results retryable", "client -> raylet",
                     "results: [(object_id, data | None, size, nested_refs, is_error)]; retryable: "
                     "the error raised may be retried. exiting: the worker exits now (max_calls "
                     "reached)", optional="exiting")
REFS = _declare(7, "REFS", "added removed", "client -> raylet",
                "object ids the sender now holds, and no longer holds")
REQUEST = _declare(8, "REQUEST", "request_id op args", "client -> raylet",
                   "a small control call: op names a raylet method, answered with REPLY")
ACTOR_EXIT = _declare(9, "ACTOR_EXIT", "actor_id reason death_data", "client -> raylet",
                      "the actor ends itself (no restart)")
GIVE_BACK = _declare(10, "GIVE_BACK", "task_ids", "client -> raylet",
                     "queued tasks the worker will not start (it is about to block in get)")
LISTENING = _declare(11, "LISTENING", "path", "client -> raylet",
                     "the worker takes pushed actor calls and leased tasks on this socket")
NOW_RUNNING = _declare(12, "NOW_RUNNING", "name", "client -> raylet",
                       "a leased worker starts a task of this name (its log prefix)")
RETURN_LEASES = _declare(13, "RETURN_LEASES", "worker_ids", "client -> raylet",
                         'leases (REQUEST "lease") the caller gives back')
LINEAGE = _declare(14, "LINEAGE", "spec", "client -> raylet",
                   "the TaskSpec of a leased task whose results the raylet is told of next: "
                   "recorded in the GCS lineage before a ref to them can leave the process")

# ------------------------------------------------------- raylet -> client

REGISTERED = _declare(50, "REGISTERED", "info", "raylet -> client",
                      "node_id, arena path, job_id, session_dir, ...")
EXECUTE = _declare(51, "EXECUTE", "spec values gpu_ids", "raylet -> worker",
                   "run this TaskSpec; values {object_id: data | None} of its ref arguments")
WAIT_REPLY = _declare(52, "WAIT_REPLY", "request_id ready", "raylet -> client",
                      "ready: [(object_id, data | None, in_arena)]: inline bytes when asked for "
                      "(with_data), in_arena when the reader maps it from the arena")
REPLY = _declare(53, "REPLY", "request_id ok result", "raylet -> client", "the answer to a REQUEST")
LOG = _declare(54, "LOG", "stream text", "raylet -> driver",
               "worker output (stream 1 or 2), already prefixed with the task name and pid")
EXIT = _declare(55, "EXIT", "reason", "raylet -> worker", "exit now")
CANCEL = _declare(56, "CANCEL", "task_id", "raylet -> worker", "interrupt that task if it runs here")
READY_NOTE = _declare(57, "READY_NOTE", "object_id", "raylet -> client",
                      "an object a finished WAIT (notify) asked about is ready")

# ------------------------------------------- caller <-> worker, one node
# Work a caller pushes straight to a worker of its node, over a link
# (``rayx.runtime.links``): calls to an actor that worker hosts
# (``rayx.runtime.actor_calls``), and tasks to a worker the raylet lent the caller
# (``rayx.runtime.leased_tasks``).

PUSH_TASK = _declare(70, "PUSH_TASK", "spec values", "caller -> worker",
                     "run this actor call or leased task; values {object_id: data | None}")
PUSH_DONE = _declare(71, "PUSH_DONE", "task_id results", "worker -> caller",
                     "results as in TASK_DONE")
PUSH_GIVE_BACK = _declare(72, "PUSH_GIVE_BACK", "task_ids", "worker -> caller",
                          "leased tasks the worker will not start (it is about to block in get)")
PUSH_CANCEL = _declare(73, "PUSH_CANCEL", "task_id force", "caller -> worker",
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
