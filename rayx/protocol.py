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
                may carry a fifth field, exiting (bool): the worker exits now (max_calls reached)
  REFS          [added object ids], [removed object ids]
  REQUEST       request_id, op (str), args (tuple)      -- small control calls
  ACTOR_EXIT    actor_id, reason                        -- the actor ends itself (no restart)
  GIVE_BACK     [task_id]                               -- queued tasks a worker will not start
                                                           (it is about to block in get)
  LISTENING     path                                    -- the worker takes direct calls and leased tasks here
  NOW_RUNNING   name                                    -- a leased worker starts a task of this name (log prefix)
  RETURN_LEASES [worker_id]                             -- leases (``REQUEST "lease"``) the caller gives back

  PUT may carry a fifth field, is_error, and a sixth, held (default True): the sender holds a ref
  to the object from now on, as a SUBMIT makes its sender hold the returns. A worker registering
  the results of a direct call or leased task sends held=False (the caller says whether it holds them).
raylet -> client
  REGISTERED    info dict (node_id, arena path, job_id, session_dir, ...)
  EXECUTE       TaskSpec, {object_id: data | None}, gpu_ids
  WAIT_REPLY    request_id, [(object_id, data | None, size)] of the ready objects
  REPLY         request_id, ok (bool), result
  LOG           text (already prefixed with the task name and pid)
  EXIT          reason                                  -- the worker should exit
  CANCEL        task_id                                 -- interrupt that task if it runs here
  READY_NOTE    object_id                               -- an object a finished wait asked about is ready

caller <-> worker (direct actor calls, ``rayx.direct_calls``; leased tasks, ``rayx.task_leases``)
  DIRECT_CALL   TaskSpec, {object_id: data | None}      -- caller -> worker
  DIRECT_DONE   task_id, [(object_id, data | None, size, nested_refs, is_error)]   -- worker -> caller
  DIRECT_RETURN [task_id]                               -- worker -> caller: leased tasks it will not start
                                                           (it is about to block in get)
  DIRECT_CANCEL task_id, force                          -- caller -> worker: rayx.cancel of a leased task
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
LISTENING = 11
NOW_RUNNING = 12
RETURN_LEASES = 13

REGISTERED = 50
EXECUTE = 51
WAIT_REPLY = 52
REPLY = 53
LOG = 54
EXIT = 55
CANCEL = 56
READY_NOTE = 57

DIRECT_CALL = 70
DIRECT_DONE = 71
DIRECT_RETURN = 72
DIRECT_CANCEL = 73

_RECV_SIZE = 1 << 20
EAGER_GAP = 0.0002   # a send after this long without a flush goes out at once


_WAKE = object()             # the wake pipe, among the polled descriptors


class ConnectionClosed(ConnectionError):
    """The raylet closed the connection (it stopped or the node died)."""


class _Outbox:
    """Messages queued for one socket, written together with one ``sendall``."""

    __slots__ = ("sock", "pending", "lock", "last_flush", "writes", "messages_sent", "before_flush",
                 "closed", "peer_name")

    def __init__(self, sock, peer_name, before_flush=None):
        self.sock = sock
        self.peer_name = peer_name
        self.pending = []
        self.lock = threading.Lock()
        self.last_flush = 0.0
        self.writes = 0              # sendall calls so far (coalescing is visible here)
        self.messages_sent = 0
        self.before_flush = before_flush
        self.closed = False

    def try_eager(self):
        """Write now if the socket has been quiet (a lone call) and nobody writes; True if written."""
        if time.monotonic() - self.last_flush > EAGER_GAP and self.lock.acquire(False):
            try:
                self.flush_locked()
            finally:
                self.lock.release()
            return True
        return False

    def flush(self):
        with self.lock:
            self.flush_locked()

    def flush_locked(self):
        if self.closed:
            raise ConnectionClosed(f"the connection to the {self.peer_name} is closed")
        edges = None if self.before_flush is None else self.before_flush()
        # Taken after the hook: a message queued before a ref change the hook reports
        # (a PUT or SUBMIT before the drop of its ref) always goes out with it or earlier.
        pending = self.pending
        self.pending = []
        if edges is not None:
            pending = edges[0] + pending + edges[1]
        self.last_flush = time.monotonic()
        if pending:
            self.writes += 1
            self.messages_sent += len(pending)
            try:
                self.sock.sendall(codec.pack_frames(pending))
            except OSError as exc:
                self.closed = True
                raise ConnectionClosed(f"lost the connection to the {self.peer_name}: {exc}") from exc


class RayletConnection:
    """The client end of a raylet socket: coalesced sends, and replies read by
    the thread that waits for them.

    ``send`` only appends to a buffer; a writer thread (or ``flush`` from a
    thread about to block) writes everything pending with one ``sendall``, so a
    burst of submissions costs one system call. Before each write the
    ``before_flush`` hook may return (messages to write first, messages to write
    last) around what is queued (the core worker uses it for reference-count
    updates); it runs before the queue is taken.

    Reading: a thread that needs a reply (``wait_for``) reads the socket itself
    and dispatches what arrives to ``on_message``, so a reply wakes the waiting
    thread directly instead of a reader thread that would then wake it. Threads
    take turns through a lock; one that finds the lock taken waits for its
    reply to be dispatched by the reader of the moment. A drainer thread reads
    what arrives while nobody waits (log lines, replies that complete futures).

    Direct connections to other processes of the node (``PeerConnection``,
    ``PeerListener``: direct actor calls) are multiplexed here: read by the
    same threads in the same ``poll`` and written by the same writer.

    No read ever blocks: sockets are read only after ``poll`` says so, and
    with MSG_DONTWAIT. A source closed by a thread that is not reading (an idle
    lease given back) has its descriptor closed by the reader of the moment,
    after its ``poll`` (``retire``), never under one; and a descriptor found
    closed anyway (POLLNVAL) is dropped as a closed peer. So
    ``wait_for(timeout)`` always returns in time.
    """

    def __init__(self, path, on_message, on_close, before_flush=None, drain_interval=0.02):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._sock_fd = self._sock.fileno()
        self._on_message = on_message
        self._on_close = on_close
        self._out = _Outbox(self._sock, "raylet", before_flush)
        self._read_lock = threading.Lock()
        self._frames = codec.FrameReader()
        self._wakeup = threading.Condition(threading.Lock())
        self._writer_scheduled = False
        self._closed = False
        self._close_reported = False
        self._drain_interval = drain_interval
        self._sources = {}           # fileno -> PeerConnection | PeerListener
        self._dirty = set()          # peers with messages waiting for the writer
        self._wake_r, self._wake_w = os.pipe()   # interrupts a poll when a source is added
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._retired = []           # closers of sources gone, for the next reader to call
        self._poller = None          # select.poll of the socket, the wake pipe and the sources
        self._polled = {}            # (rebuilt when the sources change) fd -> what it is
        self._writer = threading.Thread(target=self._write_loop, name="rayx-writer", daemon=True)
        self._drainer = threading.Thread(target=self._drain_loop, name="rayx-drainer", daemon=True)

    def start(self):
        self._writer.start()
        self._drainer.start()

    @property
    def closed(self):
        return self._closed

    @property
    def writes(self):
        return self._out.writes

    @property
    def messages_sent(self):
        return self._out.messages_sent

    def send(self, message):
        """Queue a message. Sent at once when the connection has been quiet (a lone
        call), else by the writer thread soon, coalesced with the rest of the burst."""
        out = self._out
        out.pending.append(message)
        if not out.try_eager():
            self._schedule_writer()

    def _schedule_writer(self):
        if not self._writer_scheduled:
            with self._wakeup:
                self._writer_scheduled = True
                self._wakeup.notify()

    def defer(self, message):
        """Queue a message without waking anyone: the next flush (by this thread or the
        writer, which looks every millisecond while something waits) sends it."""
        self._out.pending.append(message)

    def push(self):
        """Write what is queued now if the connection has been quiet, else soon (``send``
        for messages queued with ``defer``)."""
        if not self._out.try_eager():
            self._schedule_writer()

    def send_all_now(self, messages):
        """Queue several messages and write them (and everything pending) in one write."""
        self._out.pending.extend(messages)
        self.flush()

    def send_now(self, message):
        """Queue a message and write everything pending before returning."""
        self._out.pending.append(message)
        self.flush()

    def flush(self):
        try:
            self._out.flush()
        except ConnectionClosed:
            self._closed = True
            raise

    def _write_loop(self):
        while not self._closed:
            with self._wakeup:
                if not self._writer_scheduled and not self._closed:
                    # Wake now and then even when idle, so that reference-count
                    # updates from dropped refs reach the raylet; soon when
                    # deferred messages wait.
                    self._wakeup.wait(0.001 if self._out.pending or self._dirty else 0.1)
                self._writer_scheduled = False
            if self._dirty:
                self.flush_peers()
            try:
                self.flush()
            except ConnectionClosed:
                return
            except Exception:  # never let the writer die silently
                import traceback
                traceback.print_exc()

    # ------------------------------------------------------------- peers

    def flush_peers(self):
        """Write what waits for the writer on direct connections (a thread about to block)."""
        for peer in list(self._dirty):
            self._dirty.discard(peer)
            peer.flush()

    def add_source(self, source):
        """Read ``source`` (a PeerConnection or PeerListener) along with the raylet socket."""
        self._sources[source.fileno()] = source
        self._poller = None
        self._wake()

    def _wake(self):
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def remove_source(self, source):
        self._sources.pop(source.fileno(), None)
        self._poller = None
        self._dirty.discard(source)

    def retire(self, close_fd):
        """Stop reading a source and have ``close_fd()`` close its descriptor: now if no
        thread reads (none can be in a ``poll`` on it), else by that reader once its
        ``poll`` is over (the descriptor number could otherwise be reused under it)."""
        if self._read_lock.acquire(False):
            try:
                close_fd()
            finally:
                self._read_lock.release()
        else:
            self._retired.append(close_fd)
            self._wake()

    def connect_peer(self, path, on_message, on_close):
        """A direct connection to the process listening at ``path``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        peer = PeerConnection(self, sock, on_message, on_close)
        self.add_source(peer)
        return peer

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
        poller = self._poller
        if poller is None:
            poller = self._make_poller()
        polled = self._polled
        try:
            events = poller.poll(timeout * 1000.0)
        except InterruptedError:
            events = ()
        for fd, mask in events:
            source = polled.get(fd)
            if source is None:
                continue
            if mask & select.POLLNVAL:
                self._closed_under_us(source)
            elif source is self._sock:
                self._read_raylet()
            elif source is _WAKE:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            else:
                source.on_readable()
        retired = self._retired
        while retired:
            retired.pop()()

    def _make_poller(self):
        polled = {fd: source for fd, source in self._sources.items()}
        polled[self._sock_fd] = self._sock
        polled[self._wake_r] = _WAKE
        poller = select.poll()
        for fd in polled:
            poller.register(fd, select.POLLIN)
        self._polled = polled
        self._poller = poller
        return poller

    def _closed_under_us(self, source):
        """A descriptor was closed while we watched it (POLLNVAL): a closed raylet
        socket ends the connection, a closed peer is closed (its ``on_close`` runs, as
        when the other side goes)."""
        self._poller = None
        if source is self._sock:
            self._report_close()
        elif source is not _WAKE:
            source.close()

    def _read_raylet(self):
        try:
            data = self._sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
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
        for source in list(self._sources.values()):
            source.close()
        self._sources.clear()
        retired = self._retired
        while retired:
            retired.pop()()
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class PeerConnection:
    """A direct connection between two processes of a node (an actor's worker and
    one of its callers), read and written through the process's RayletConnection.

    ``on_message(peer, message)`` gets each message; ``on_close(peer)`` is called
    once when the other side goes away (or a write to it fails).
    """

    def __init__(self, hub, sock, on_message, on_close):
        self.hub = hub
        self.sock = sock
        self.out = _Outbox(sock, "peer process")
        self.frames = codec.FrameReader()
        self.on_message = on_message
        self.on_close = on_close
        self.closed = False
        self._fileno = sock.fileno()

    def fileno(self):
        return self._fileno

    def send(self, message):
        """Queue a message: written at once when the socket has been quiet, else by the writer."""
        out = self.out
        out.pending.append(message)
        try:
            if out.try_eager():
                return
        except ConnectionClosed:
            self._broken()
            return
        self.hub._dirty.add(self)
        self.hub._schedule_writer()

    def defer(self, message):
        self.out.pending.append(message)
        self.hub._dirty.add(self)

    def send_now(self, message):
        self.out.pending.append(message)
        self.flush()

    def flush(self):
        try:
            self.out.flush()
        except ConnectionClosed:
            self._broken()

    def _broken(self):
        """A write failed: make the reader see the end (it reports the close once)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def on_readable(self):
        if self.closed:
            return                # closed by another thread since the poll
        try:
            data = self.sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except (OSError, ValueError):
            data = b""
        if data:
            try:
                messages = self.frames.feed(data)
            except Exception:
                data = b""        # a malformed frame: drop the connection
            else:
                for message in messages:
                    self.on_message(self, message)
                return
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.hub.remove_source(self)
        with self.out.lock:
            self.out.closed = True    # no write starts from now on
        self.hub.retire(self._close_socket)
        self.on_close(self)

    def _close_socket(self):
        with self.out.lock:       # never close the descriptor under a writer
            try:
                self.sock.close()
            except OSError:
                pass


class PeerListener:
    """A Unix socket (mode 0600) on which other processes of the node open PeerConnections."""

    def __init__(self, hub, path, on_message, on_close):
        self.hub = hub
        self.path = path
        self.on_message = on_message
        self.on_close = on_close
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(128)
        self._fileno = self.sock.fileno()
        hub.add_source(self)

    def fileno(self):
        return self._fileno

    def on_readable(self):
        try:
            sock, _ = self.sock.accept()
        except OSError:
            return
        self.hub.add_source(PeerConnection(self.hub, sock, self.on_message, self.on_close))

    def close(self):
        self.hub.remove_source(self)
        self.hub.retire(self.sock.close)
        try:
            os.unlink(self.path)
        except OSError:
            pass
