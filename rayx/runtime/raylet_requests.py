"""Requests a process sends its raylet and waits for: control calls (REQUEST,
answered by REPLY) and waits for objects (WAIT, answered by WAIT_REPLY).

Each request gets an id and a ``Pending`` entry; the reply is dispatched here
(``on_reply``, ``on_wait_reply``) by whichever thread reads the raylet socket
at the time, and either wakes the thread waiting for it (``call``, ``wait``)
or runs a callback in that reading thread (``call_async``, ``wait_async``).
When the connection closes every request still out fails.
"""
import itertools
import threading

from rayx import messages
from rayx.exceptions import GetTimeoutError, RaySystemError

_REQUEST = messages.REQUEST
_WAIT = messages.WAIT
_CANCEL_WAIT = messages.CANCEL_WAIT


class Pending:
    """A request sent to the raylet whose reply someone waits for."""

    __slots__ = ("event", "ok", "result", "callback")

    def __init__(self, callback=None):
        self.event = threading.Event()
        self.ok = True
        self.result = None
        self.callback = callback


class RayletRequests:
    """The requests of one process to its raylet, by request id."""

    def __init__(self, conn, on_block=None, on_unblock=None):
        self._conn = conn
        self._pending = {}
        self._ids = itertools.count(1)
        # Called before a wait that may block, and after it (a worker's executor gives
        # back the tasks queued on it meanwhile).
        self._on_block = on_block
        self._on_unblock = on_unblock

    # ------------------------------------------------------------ replies

    def on_reply(self, request_id, ok, result):
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.ok, pending.result = ok, result
            self._answered(pending)

    def on_wait_reply(self, request_id, ready):
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.result = ready
            self._answered(pending)

    @staticmethod
    def _answered(pending):
        if pending.callback is not None:
            pending.callback(pending)
        pending.event.set()

    def fail_all(self, reason):
        """The connection closed: every request still out fails with ``reason``."""
        for pending in list(self._pending.values()):
            pending.ok = False
            pending.result = reason
            pending.event.set()

    # ------------------------------------------------------------ control calls

    def call(self, op, *args, timeout=60):
        """A control call to the raylet; returns its result or raises."""
        request_id = next(self._ids)
        pending = self._pending[request_id] = Pending()
        self._conn.send_now(_REQUEST(request_id, op, args))
        if not self._conn.wait_for(pending.event, timeout):
            self._pending.pop(request_id, None)
            raise GetTimeoutError(f"the raylet did not answer {op!r} within {timeout} s")
        if not pending.ok:
            raise RaySystemError(f"{op} failed: {pending.result}")
        return pending.result

    def call_async(self, op, args, callback):
        """A control call whose answer goes to ``callback(ok, result)`` (in a reading thread)."""
        request_id = next(self._ids)
        self._pending[request_id] = Pending(
            callback=lambda pending: callback(pending.ok, pending.result))
        self._conn.send(_REQUEST(request_id, op, args))

    # ------------------------------------------------------------ waits

    def wait(self, object_ids, num_ready, with_data, timeout, fetch=True, notify=False):
        """[(object id, data | None, in arena)] of the ready objects once ``num_ready`` of
        ``object_ids`` are (None when ``timeout`` passes first)."""
        request_id = next(self._ids)
        pending = self._pending[request_id] = Pending()
        blocking = self._on_block is not None and num_ready > 0
        if blocking:
            self._on_block()
        try:
            self._conn.send_now(_WAIT(request_id, object_ids, num_ready, with_data, fetch, notify))
            if not self._conn.wait_for(pending.event, timeout):
                self._pending.pop(request_id, None)
                self._conn.send_now(_CANCEL_WAIT(request_id))
                return None
        finally:
            if blocking:
                self._on_unblock()
        if not pending.ok:
            raise RaySystemError(pending.result)
        return pending.result

    def wait_async(self, object_ids, num_ready, with_data, callback, now=False):
        """A wait whose answer goes to ``callback(pending)`` (in a reading thread); sent
        at once with ``now``, else with the next write."""
        request_id = next(self._ids)
        self._pending[request_id] = Pending(callback=callback)
        message = _WAIT(request_id, object_ids, num_ready, with_data)
        if now:
            self._conn.send_now(message)
        else:
            self._conn.send(message)
