"""The raylet's end of the client socket: its handler table is built from the
message declarations (``rayx.messages``) and checked when the raylet is
constructed; what it sends has the declared fields; a malformed frame closes
only the connection that sent it."""
import asyncio
import os
import socket

import pytest

from rayx import messages
from rayx._core import codec
from rayx.raylet.node_manager import Raylet
from rayx.raylet.waits import Waits


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _raylet(loop, tmp_path):
    """A raylet that is built but never started: no GCS, no arena, no workers."""
    return Raylet(loop, node_id=b"\x01" * 16, session_dir=str(tmp_path),
                  socket_path=str(tmp_path / "raylet.sock"), arena=None, gcs=None,
                  resources={"CPU": 1}, min_workers=0, node_info={})


def test_every_client_message_has_a_raylet_handler(loop, tmp_path):
    raylet = _raylet(loop, tmp_path)
    client_tags = {m.tag for m in messages.ALL.values() if m.direction == "client -> raylet"}
    assert set(raylet.clients.table) == client_tags


def test_a_handler_that_does_not_match_its_message_fails_at_construction(loop, tmp_path, monkeypatch):
    def wait(self, conn, request_id, object_ids, with_data, num_ready, fetch=True, notify=False):
        pass    # two fields swapped

    monkeypatch.setattr(Waits, "wait", wait)
    with pytest.raises(TypeError, match="WAIT"):
        _raylet(loop, tmp_path)


def _raylet_socket(rayx):
    [node] = [n for n in rayx.nodes() if n["Alive"]]
    return node["RayletSocketName"]


def _read_messages(sock, count, timeout=30):
    reader = codec.FrameReader()
    received = []
    sock.settimeout(timeout)
    while len(received) < count:
        data = sock.recv(65536)
        if not data:
            break
        received.extend(reader.feed(data))
    return received


def test_registration_reply_has_the_declared_fields(rayx_start):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(_raylet_socket(rayx_start))
        sock.sendall(codec.pack_frames([messages.REGISTER("driver", b"", os.getpid(), b"\xfe\xff\xff\xff", {})]))
        [reply] = _read_messages(sock, 1)
    assert reply[0] == messages.REGISTERED.tag
    assert len(reply) == 1 + len(messages.REGISTERED.fields)
    assert reply[1]["node_id"]


def test_a_malformed_frame_closes_only_its_connection(rayx_start):
    rayx = rayx_start

    @rayx.remote
    def add_one(x):
        return x + 1

    path = _raylet_socket(rayx)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bystander, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sender:
        bystander.connect(path)
        sender.connect(path)
        sender.sendall(b"\x00\x00\x00\x00")          # an empty frame: malformed
        sender.settimeout(30)
        assert sender.recv(1) == b""                 # the raylet closed it
        # Another connection, opened before, still works...
        bystander.sendall(codec.pack_frames([messages.REGISTER("driver", b"", os.getpid(),
                                                               b"\xfe\xff\xff\xff", {})]))
        [reply] = _read_messages(bystander, 1)
        assert reply[0] == messages.REGISTERED.tag
    # ...and so does the driver's own.
    assert rayx.get(add_one.remote(1), timeout=60) == 2
