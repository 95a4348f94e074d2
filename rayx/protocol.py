"""The messages between a node's raylet and its drivers and workers.

Every message is a tuple whose first element is one of the tags below, encoded
by the Cython codec (``rayx._core.codec``) and framed with a 4-byte length on
the raylet's Unix socket. Nothing on this socket is ever unpickled: values
travel as opaque serialized bytes that only the process that asked for them
deserializes.

Shapes (after the tag):

client -> raylet
  REGISTER      kind ("driver"|"worker"), worker_id, pid, job_id, info dict
  SUBMIT        TaskSpec
  PUT           object_id, data | None (None: already sealed in the arena), size, nested_refs
  WAIT          request_id, [object_id], num_ready, with_data (bool), fetch (bool: pull remote objects here),
                notify (bool: after the reply, send READY_NOTE for the rest as they become ready)
  CANCEL_WAIT   request_id
  TASK_DONE     task_id, [(object_id, data | None, size, nested_refs, is_error)], retryable_error (bool)
  REFS          [added object ids], [removed object ids]
  REQUEST       request_id, op (str), args (tuple)      -- small control calls
  ACTOR_EXIT    actor_id, reason                        -- the actor ends itself (no restart)
  GIVE_BACK     [task_id]                               -- queued tasks a worker will not start
                                                           (it is about to block in get)
raylet -> client
  REGISTERED    info dict (node_id, arena path, job_id, session_dir, ...)
  EXECUTE       TaskSpec, {object_id: data | None}, gpu_ids
  WAIT_REPLY    request_id, [(object_id, data | None, size)] of the ready objects
  REPLY         request_id, ok (bool), result
  LOG           text (already prefixed with the task name and pid)
  EXIT          reason                                  -- the worker should exit
  CANCEL        task_id                                 -- interrupt that task if it runs here
  READY_NOTE    object_id                               -- an object a finished wait asked about is ready
"""
import os
import select
import socket
import threading
import time

from rayx._core import codec

REGISTER = 1
SUBMIT = 2
PUT = 3
WAIT = 4
CANCEL_WAIT = 5
TASK_DONE = 6
REFS = 7
REQUEST = 8
ACTOR_EXIT = 9
GIVE_BACK = 10

REGISTERED = 50
EXECUTE = 51
WAIT_REPLY = 52
REPLY = 53
LOG = 54
EXIT = 55
CANCEL = 56
READY_NOTE = 57

_RECV_SIZE = 1 << 20
EAGER_GAP = 0.0002   # a send after this long without a flush goes out at once


class ConnectionClosed(ConnectionError):
    """The raylet closed the connection (it stopped or the node died)."""


class RayletConnection:
    """The client end of a raylet socket: coalesced sends, and replies read by
    the thread that waits for them.

    ``send`` only appends to a buffer; a writer thread (or ``flush`` from a
    thread about to block) writes everything pending with one ``sendall``, so a
    burst of submissions costs one system call. Before each write the
    ``before_flush`` hook may prepend and append messages (the core worker uses
    it for reference-count updates).

    Reading: a thread that needs a reply (``wait_for``) reads the socket itself
    and dispatches what arrives to ``on_message``, so a reply wakes the waiting
    thread directly instead of a reader thread that would then wake it. Threads
    take turns through a lock; one that finds the lock taken waits for its
    reply to be dispatched by the reader of the moment. A drainer thread reads
    what arrives while nobody waits (log lines, replies that complete futures).
    """

    def __init__(self, path, on_message, on_close, before_flush=None, drain_interval=0.02):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._on_message = on_message
        self._on_close = on_close
        self._before_flush = before_flush
        self._pending = []
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._frames = codec.FrameReader()
        self._wakeup = threading.Condition(threading.Lock())
        self._writer_scheduled = False
        self._closed = False
        self._close_reported = False
        self._drain_interval = drain_interval
        self._last_flush = 0.0
        self.writes = 0              # sendall calls so far (coalescing is visible here)
        self.messages_sent = 0
        self._writer = threading.Thread(target=self._write_loop, name="rayx-writer", daemon=True)
        self._drainer = threading.Thread(target=self._drain_loop, name="rayx-drainer", daemon=True)

    def start(self):
        self._writer.start()
        self._drainer.start()

    @property
    def closed(self):
        return self._closed

    def send(self, message):
        """Queue a message. Sent at once when the connection has been quiet (a lone
        call), else by the writer thread soon, coalesced with the rest of the burst."""
        self._pending.append(message)
        if time.monotonic() - self._last_flush > EAGER_GAP and self._write_lock.acquire(False):
            try:
                self._flush_locked()
            finally:
                self._write_lock.release()
            return
        if not self._writer_scheduled:
            with self._wakeup:
                self._writer_scheduled = True
                self._wakeup.notify()

    def defer(self, message):
        """Queue a message without waking anyone: the next flush (by this thread or the
        writer, which looks every millisecond while something waits) sends it."""
        self._pending.append(message)

    def send_all_now(self, messages):
        """Queue several messages and write them (and everything pending) in one write."""
        self._pending.extend(messages)
        self.flush()

    def send_now(self, message):
        """Queue a message and write everything pending before returning."""
        self._pending.append(message)
        self.flush()

    def flush(self):
        with self._write_lock:
            self._flush_locked()

    def _flush_locked(self):
        if self._closed:
            raise ConnectionClosed("the connection to the raylet is closed")
        pending = self._pending
        self._pending = []
        if self._before_flush is not None:
            pending = self._before_flush(pending)
        self._last_flush = time.monotonic()
        if pending:
            self.writes += 1
            self.messages_sent += len(pending)
            try:
                self._sock.sendall(codec.pack_frames(pending))
            except OSError as exc:
                self._closed = True
                raise ConnectionClosed(f"lost the connection to the raylet: {exc}") from exc

    def _write_loop(self):
        while not self._closed:
            with self._wakeup:
                if not self._writer_scheduled and not self._closed:
                    # Wake now and then even when idle, so that reference-count
                    # updates from dropped refs reach the raylet; soon when
                    # deferred messages wait.
                    self._wakeup.wait(0.001 if self._pending else 0.1)
                self._writer_scheduled = False
            try:
                self.flush()
            except ConnectionClosed:
                return
            except Exception:  # never let the writer die silently
                import traceback
                traceback.print_exc()

    # ------------------------------------------------------------- reading

    def wait_for(self, event, timeout=None):
        """Block until ``event`` is set (by a dispatched message) or ``timeout`` passes;
        reading the socket meanwhile when no other thread is. Returns event.is_set()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not event.is_set():
            if self._closed:
                return event.is_set()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            step = 0.05 if remaining is None else min(remaining, 0.05)
            if self._read_lock.acquire(False):
                try:
                    if not event.is_set():
                        self._read_some(step)
                finally:
                    self._read_lock.release()
            else:
                event.wait(min(step, 0.002))
        return True

    def _read_some(self, timeout):
        """Read what arrives within ``timeout`` and dispatch it (caller holds the read lock)."""
        try:
            readable, _, _ = select.select([self._sock], [], [], timeout)
            if not readable:
                return
            data = self._sock.recv(_RECV_SIZE)
        except (OSError, ValueError):
            data = b""
        if not data:
            self._report_close()
            return
        for message in self._frames.feed(data):
            self._on_message(message)

    def _drain_loop(self):
        while not self._closed:
            time.sleep(self._drain_interval)
            if self._read_lock.acquire(False):
                try:
                    self._read_some(0)
                finally:
                    self._read_lock.release()
        self._report_close()

    def _report_close(self):
        self._closed = True
        if not self._close_reported:
            self._close_reported = True
            with self._wakeup:
                self._wakeup.notify()
            self._on_close()

    def close(self):
        if self._closed:
            return
        try:
            self.flush()
        except ConnectionClosed:
            pass
        self._closed = True
        self._close_reported = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._wakeup:
            self._wakeup.notify()
        if self._drainer.is_alive() and threading.current_thread() is not self._drainer:
            self._drainer.join(timeout=5)
        self._sock.close()


def socket_path(session_dir, node_name="raylet"):
    return os.path.join(session_dir, "sockets", node_name + ".sock")
