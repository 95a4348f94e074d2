"""Links between two processes of one node: a caller and the worker it sends
actor calls or leased tasks to, over the worker's own Unix socket (mode 0600).

A link is read and written through the process's ``RayletConnection``
(``rayx.runtime.transport``): the same reading threads poll it with the raylet
socket, and the same writer thread coalesces its writes. Messages that arrive
are dispatched through a handler table of ``rayx.messages.handlers`` whose
handlers take the link first (``leading=("link",)``), once every message of
the read has passed ``rayx.messages.check``; a malformed frame or message
drops the link (the other side sees it close), never the process.

(Links join processes of one node; ``rayx.raylet.peers`` joins raylets of
different nodes.)
"""
import logging
import os
import socket

from rayx import messages
from rayx._core import codec
from rayx.runtime.transport import RECV_SIZE, ConnectionClosed, Outbox

logger = logging.getLogger("rayx")
check = messages.check


def connect(hub, path, handlers, on_close):
    """A link to the process listening at ``path``, read and written through ``hub``
    (the process's RayletConnection)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    link = ProcessLink(hub, sock, handlers, on_close)
    hub.add_source(link)
    return link


class ProcessLink:
    """One end of a link between two processes of a node (an actor's worker and one
    of its callers, or a leased worker and the caller it is lent to).

    Each message is dispatched to ``handlers[tag](link, *fields)``; ``on_close(link)``
    is called once when the other side goes away (or a write to it fails).
    """

    def __init__(self, hub, sock, handlers, on_close):
        self.hub = hub
        self.sock = sock
        self.out = Outbox(sock, "process at the other end of the link")
        self.frames = codec.FrameReader(messages.MAX_FRAME_BYTES)
        self.handlers = handlers
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
        hub = self.hub
        hub.write_soon(self)
        hub.wake_writer()

    def defer(self, message):
        self.out.pending.append(message)
        self.hub.write_soon(self)

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
            data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except (OSError, ValueError):
            data = b""
        if data:
            try:
                received = self.frames.feed(data)
                for message in received:
                    check(message)
            except Exception as exc:
                logger.error("dropping a link that sent a malformed message: %s", exc)
                data = b""        # a malformed frame or message: drop the link
            else:
                handlers = self.handlers
                for message in received:
                    handler = handlers.get(message[0])
                    if handler is not None:
                        handler(self, *message[1:])
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


class LinkListener:
    """A Unix socket (mode 0600) on which other processes of the node open links to this one."""

    def __init__(self, hub, path, handlers, on_close):
        self.hub = hub
        self.path = path
        self.handlers = handlers
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
        self.hub.add_source(ProcessLink(self.hub, sock, self.handlers, self.on_close))

    def close(self):
        self.hub.remove_source(self)
        self.hub.retire(self.sock.close)
        try:
            os.unlink(self.path)
        except OSError:
            pass
