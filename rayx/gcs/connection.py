"""One blocking connection to one redis-server: RESP encoding, hiredis parsing.

Every component of rayx talks to the GCS through this class (via GcsClient),
so it is kept small and fast: a command is encoded into RESP with a single
``bytes.join``, written with one ``sendall`` and its reply parsed by
``hiredis.Reader`` from a reused receive buffer.  A pipeline is the same thing
for many commands: one write, then one read loop for all the replies.

Connection loss.  A GCS shard that dies is restarted by the monitor on the
same port from its AOF, so a lost connection is expected and survivable: the
connection reconnects with exponential backoff for up to ``retry_timeout``
seconds, authenticates again and re-sends the command (or the whole pipeline).
That re-send is only safe because the writes rayx makes are idempotent
(SET/GET/HSET/SADD/DEL style).  INCR and PUBLISH are the exceptions: a reply
lost together with the connection can make them run twice (a skipped counter
value, a duplicated message), which rayx callers tolerate.  A shard that is
still loading its AOF answers ``-LOADING``; that is retried the same way.

Thread safety: one lock per connection, held for a whole command or pipeline.
"""

import socket
import threading
import time

import hiredis

__all__ = [
    "RedisError",
    "ConnectionLost",
    "AuthenticationError",
    "RedisConnection",
    "encode_command",
]

_RECV_SIZE = 1 << 16
_BACKOFF_START = 0.01
_BACKOFF_MAX = 0.5


class RedisError(Exception):
    """An error reply from redis-server (the message is the server's)."""


class ConnectionLost(RedisError):
    """The connection broke and could not be re-established in time."""


class AuthenticationError(RedisError):
    """AUTH was refused (wrong or missing password); never retried."""


def _encode_into(parts, args):
    """Append the RESP encoding of one command to ``parts`` (a list of bytes)."""
    parts.append(b"*%d\r\n" % len(args))
    for a in args:
        t = type(a)
        if t is bytes:
            b = a
        elif t is str:
            b = a.encode()
        elif t is int:
            b = b"%d" % a
        elif t is float:
            b = repr(a).encode()
        elif isinstance(a, (bytearray, memoryview)):
            b = bytes(a)
        elif isinstance(a, int) and not isinstance(a, bool):
            b = b"%d" % a
        else:
            raise TypeError("cannot send a %s to redis (bytes, str, int or float only)" % t.__name__)
        parts.append(b"$%d\r\n" % len(b))
        parts.append(b)
        parts.append(b"\r\n")


def encode_command(*args):
    """RESP bytes of one command, e.g. ``encode_command("SET", b"k", b"v")``."""
    parts = []
    _encode_into(parts, args)
    return b"".join(parts)


def _is_loading(reply):
    return isinstance(reply, RedisError) and str(reply).startswith("LOADING")


class RedisConnection:
    """A blocking, thread-safe connection with reconnect-and-retry.

    ``execute(*args)`` returns the reply (bytes, int, list or None) and raises
    RedisError for an error reply.  ``pipeline(commands)`` returns the replies
    in order, with error replies as RedisError *instances* in the list.
    ``round_trips`` counts the writes-then-reads made (for tests/benchmarks).
    """

    def __init__(self, host, port, password=None, timeout=10.0, retry_timeout=30.0, connect=True):
        self.host = host
        self.port = int(port)
        self.password = password
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self.round_trips = 0   # writes followed by reading their replies
        self.reconnects = 0    # successful connects after the first one
        self._lock = threading.Lock()
        self._sock = None
        self._reader = None
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)
        self._ever_connected = False
        self._closed = False
        if connect:
            with self._lock:
                self._with_retry(None, 0)

    def __repr__(self):
        return "RedisConnection(%s:%d)" % (self.host, self.port)

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    # -- low level, caller holds the lock ---------------------------------

    def _connect_once(self):
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._reader = hiredis.Reader(replyError=RedisError)
            if self.password:
                sock.sendall(encode_command("AUTH", self.password))
                reply = self._read_reply()
                if isinstance(reply, RedisError):
                    raise AuthenticationError("AUTH refused by %s: %s" % (self.address, reply))
        except BaseException:
            self._drop()
            raise
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True

    def _drop(self):
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _read_reply(self):
        reader = self._reader
        reply = reader.gets()
        while reply is False:
            n = self._sock.recv_into(self._buf)
            if not n:
                raise ConnectionLost("%s closed the connection" % self.address)
            reader.feed(self._view, 0, n)
            reply = reader.gets()
        return reply

    def _with_retry(self, data, nreplies):
        """Send ``data`` and read replies, reconnecting as needed.

        ``nreplies=None``: one reply, returned as is; an int: that many
        replies, returned as a list.  With ``data=None`` only (re)connects.
        """
        deadline = None
        backoff = _BACKOFF_START
        while True:
            if self._closed:
                raise ConnectionLost("connection to %s was closed" % self.address)
            try:
                if self._sock is None:
                    self._connect_once()
                if data is None:
                    return None
                self._sock.sendall(data)
                self.round_trips += 1
                if nreplies is None:
                    reply = self._read_reply()
                    if not _is_loading(reply):
                        return reply
                else:
                    read = self._read_reply
                    replies = [read() for _ in range(nreplies)]
                    if not any(_is_loading(r) for r in replies):
                        return replies
                cause = "shard is loading its data"
            except AuthenticationError:
                raise
            except (OSError, ConnectionLost, hiredis.ProtocolError) as e:
                # Includes socket.timeout: a reply may be half read, so the
                # stream is out of step and the connection must be dropped.
                self._drop()
                cause = e
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.retry_timeout
            if now >= deadline:
                raise ConnectionLost(
                    "redis at %s unreachable for %.1fs: %s" % (self.address, self.retry_timeout, cause))
            time.sleep(min(backoff, max(0.0, deadline - now)))
            backoff = min(backoff * 2, _BACKOFF_MAX)

    # -- public ------------------------------------------------------------

    def execute(self, *args):
        """Run one command; return its reply, raise RedisError on an error reply."""
        parts = []
        _encode_into(parts, args)
        data = b"".join(parts)
        with self._lock:
            reply = self._with_retry(data, None)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, commands):
        """Run many commands in one round trip; replies in order, errors as instances."""
        if not commands:
            return []
        parts = []
        enc = _encode_into
        for cmd in commands:
            enc(parts, cmd)
        data = b"".join(parts)
        with self._lock:
            return self._with_retry(data, len(commands))

    def connect(self):
        """(Re)connect now if not connected, retrying for up to retry_timeout."""
        with self._lock:
            self._with_retry(None, 0)

    # Raw access for a subscriber thread, which owns its connection: no
    # retries here (the subscriber reconnects and resubscribes itself).

    def send_raw(self, *commands):
        """Write commands without reading replies (the connection must be up)."""
        parts = []
        for cmd in commands:
            _encode_into(parts, cmd)
        with self._lock:
            if self._sock is None:
                raise ConnectionLost("not connected to %s" % self.address)
            try:
                self._sock.sendall(b"".join(parts))
            except OSError as e:
                self._drop()
                raise ConnectionLost("send to %s failed: %s" % (self.address, e)) from e

    def read_raw(self, timeout=None):
        """Read one reply; returns ``None`` on timeout, raises ConnectionLost.

        A timeout is harmless here: hiredis keeps a half-read reply buffered.
        Only the thread that owns the connection may call this.
        """
        sock = self._sock
        if sock is None:
            raise ConnectionLost("not connected to %s" % self.address)
        reader = self._reader
        reply = reader.gets()
        try:
            sock.settimeout(timeout)
            while reply is False:
                n = sock.recv_into(self._buf)
                if not n:
                    raise ConnectionLost("%s closed the connection" % self.address)
                reader.feed(self._view, 0, n)
                reply = reader.gets()
        except socket.timeout:
            return None
        except (OSError, hiredis.ProtocolError) as e:
            self._drop()
            raise ConnectionLost("read from %s failed: %s" % (self.address, e)) from e
        except ConnectionLost:
            self._drop()
            raise
        return reply

    def reconnect_once(self):
        """Drop the socket and make one connection attempt (raises OSError/RedisError)."""
        with self._lock:
            self._drop()
            self._connect_once()

    def interrupt(self):
        """Wake a thread blocked reading this connection (it sees ConnectionLost)."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self._closed = True
        self.interrupt()
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
