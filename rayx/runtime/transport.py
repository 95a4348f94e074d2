"""The client end of a raylet's Unix socket, shared by every thread of a driver
or worker: coalesced writes, and reads done by the threads that wait.

A message is a tuple built by its declaration in ``rayx.messages``, encoded by
the Cython codec and framed with a 4-byte length. ``Outbox`` holds what waits
to be written to one socket and writes it with one ``sendall``;
``RayletConnection`` owns the raylet socket and also reads and writes the
process's sockets to other processes of its node (``rayx.runtime.links``), in
the same ``poll`` and by the same writer thread.
"""
import os
import select
import socket
import threading
import time

from rayx._core import codec

RECV_SIZE = 1 << 20
EAGER_GAP = 0.0002   # a send after this long without a flush goes out at once


_WAKE = object()             # the wake pipe, among the polled descriptors


class ConnectionClosed(ConnectionError):
    """The other end closed the connection: the raylet (it stopped, or the node died),
    or the process at the other end of a link."""


class Outbox:
    """Messages queued for one socket, written together with one ``sendall``."""

    __slots__ = ("sock", "pending", "lock", "last_flush", "writes", "messages_sent", "before_flush",
                 "closed", "other_end")

    def __init__(self, sock, other_end, before_flush=None):
        self.sock = sock
        self.other_end = other_end   # what is at the other end, for error messages
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
            raise ConnectionClosed(f"the connection to the {self.other_end} is closed")
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
                raise ConnectionClosed(f"lost the connection to the {self.other_end}: {exc}") from exc


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
    and dispatches what arrives through the handler table given to ``start``
    (built by ``rayx.messages.handlers``), so a reply wakes the waiting thread
    directly instead of a reader thread that would then wake it. Threads take
    turns through a lock; one that finds the lock taken waits for its reply to
    be dispatched by the reader of the moment. A drainer thread reads what
    arrives while nobody waits (log lines, replies that complete futures).

    The process's links to other processes of the node (``ProcessLink``,
    ``LinkListener`` of ``rayx.runtime.links``: actor calls, leased tasks) are
    multiplexed here: read by the same threads in the same ``poll`` and written
    by the same writer.

    No read ever blocks: sockets are read only after ``poll`` says so, and
    with MSG_DONTWAIT. A source closed by a thread that is not reading (an idle
    lease given back) has its descriptor closed by the reader of the moment,
    after its ``poll`` (``retire``), never under one; and a descriptor found
    closed anyway (POLLNVAL) is dropped as a closed link. So
    ``wait_for(timeout)`` always returns in time.
    """

    def __init__(self, path, on_close, before_flush=None, drain_interval=0.02):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._sock_fd = self._sock.fileno()
        self._handlers = {}          # tag -> handler(*fields), given to start()
        self._on_close = on_close
        self._out = Outbox(self._sock, "raylet", before_flush)
        self._read_lock = threading.Lock()
        self._frames = codec.FrameReader()
        self._wakeup = threading.Condition(threading.Lock())
        self._writer_scheduled = False
        self._closed = False
        self._close_reported = False
        self._drain_interval = drain_interval
        self._sources = {}           # fileno -> ProcessLink | LinkListener
        self._dirty = set()          # links with messages waiting for the writer
        self._wake_r, self._wake_w = os.pipe()   # interrupts a poll when a source is added
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._retired = []           # closers of sources gone, for the next reader to call
        self._poller = None          # select.poll of the socket, the wake pipe and the sources
        self._polled = {}            # (rebuilt when the sources change) fd -> what it is
        self._writer = threading.Thread(target=self._write_loop, name="rayx-writer", daemon=True)
        self._drainer = threading.Thread(target=self._drain_loop, name="rayx-drainer", daemon=True)

    def start(self, handlers):
        """Start reading (dispatching each message through ``handlers``, a table of
        ``rayx.messages.handlers``) and writing."""
        self._handlers = handlers
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
            self.wake_writer()

    def wake_writer(self):
        """Have the writer thread write what is queued (here and on links) soon."""
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
            self.wake_writer()

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
                self.flush_links()
            try:
                self.flush()
            except ConnectionClosed:
                return
            except Exception:  # never let the writer die silently
                import traceback
                traceback.print_exc()

    # ------------------------------------------------------------- links

    def flush_links(self):
        """Write what waits for the writer on links (a thread about to block)."""
        if self._dirty:
            for link in list(self._dirty):
                self._dirty.discard(link)
                link.flush()

    def write_soon(self, link):
        """``link`` has messages queued: the writer writes them within a millisecond,
        or a thread about to block (``flush_links``) before."""
        self._dirty.add(link)

    def add_source(self, source):
        """Read ``source`` (a ProcessLink or LinkListener) along with the raylet socket."""
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
        socket ends the connection, a closed link is closed (its ``on_close`` runs, as
        when the other side goes)."""
        self._poller = None
        if source is self._sock:
            self._report_close()
        elif source is not _WAKE:
            source.close()

    def _read_raylet(self):
        try:
            data = self._sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except (OSError, ValueError):
            data = b""
        if not data:
            self._report_close()
            return
        handlers = self._handlers
        for message in self._frames.feed(data):
            handler = handlers.get(message[0])
            if handler is not None:
                handler(*message[1:])

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
