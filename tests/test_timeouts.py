"""A timeout given to ``get`` or ``wait`` always holds: the thread reading the
node's sockets never blocks in a read, and a socket closed by another thread
(an idle lease given back, a leased worker killed) is never closed under a
reader's ``poll``, and is handled as a closed peer if it is anyway."""
import os
import signal
import socket
import threading
import time

import pytest

import rayx
from rayx.runtime.links import ProcessLink
from rayx.runtime.transport import RayletConnection
from rayx.exceptions import GetTimeoutError
from rayx.runtime import context
from helpers import wait_for


# ------------------------------------------------------ the reader, alone


@pytest.fixture
def hub(tmp_path):
    """A RayletConnection to a stand-in raylet that accepts and then says nothing."""
    path = str(tmp_path / "raylet.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    closed = []
    conn = RayletConnection(path, lambda: closed.append(True))
    accepted, _ = server.accept()
    conn.start({})
    yield conn
    conn.close()
    accepted.close()
    server.close()


def _peer(hub, closes):
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    peer = ProcessLink(hub, mine, {}, closes.append)
    hub.add_source(peer)
    return peer, theirs


def _wait_in_thread(hub, timeout):
    """``hub.wait_for`` an event nobody sets, in a thread; (thread, [its result])."""
    result = []
    thread = threading.Thread(target=lambda: result.append(hub.wait_for(threading.Event(), timeout)),
                              daemon=True)
    thread.start()
    return thread, result


def test_a_reader_returns_in_time_when_a_peer_socket_is_closed_under_it(hub):
    closes = []
    peer, theirs = _peer(hub, closes)
    assert hub.wait_for(threading.Event(), 0.1) is False    # the peer is watched
    peer.sock.close()      # as a thread closing it without the reader's lock would
    thread, result = _wait_in_thread(hub, 0.5)
    thread.join(30)
    assert not thread.is_alive() and result == [False]
    assert closes == [peer]                                  # seen as a closed peer
    theirs.close()


def test_a_peer_closed_while_someone_reads_is_closed_by_that_reader(hub):
    closes = []
    peer, theirs = _peer(hub, closes)
    with hub._read_lock:                     # a reader is in its poll
        peer.close()
        assert closes == [peer]
        assert peer.sock.fileno() != -1      # not under the reader's poll
    assert hub.wait_for(threading.Event(), 0.1) is False
    assert peer.sock.fileno() == -1          # the next reader closed it
    theirs.close()


def test_readers_keep_their_timeouts_while_other_threads_close_peers(hub):
    closes = []
    threads = [_wait_in_thread(hub, 0.2) for _ in range(3)]
    peers = []
    for _ in range(200):
        peer, theirs = _peer(hub, closes)
        theirs.close()
        peers.append(peer)
        peer.close()
    for thread, _ in threads:
        thread.join(30)
    assert [result for _, result in threads] == [[False]] * 3
    assert hub.wait_for(threading.Event(), 0.1) is False
    assert all(peer.sock.fileno() == -1 for peer in peers)
    assert len(closes) == len(peers)


# ------------------------------------------------------ in a cluster


@rayx.remote
def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


@rayx.remote(max_retries=-1)
def quick(i):
    time.sleep(0.002)
    return i


def _leases(core):
    with core.leases.lock:
        return [lease for shape in core.leases.shapes.values() for lease in shape.leases]


@pytest.mark.timeout(120)
def test_get_and_wait_time_out_when_a_peer_closes_under_the_reader(rayx_fresh):
    core = context.core_worker()
    rayx.get([quick.remote(i) for i in range(20)], timeout=60)   # workers are up
    slow = sleep_for.remote(10)                        # on a leased worker
    assert wait_for(lambda: any(lease.inflight for lease in _leases(core)), timeout=60)
    peer = next(lease.link for lease in _leases(core) if lease.inflight)
    closer = threading.Timer(0.3, peer.sock.close)     # not through the reading thread's lock
    closer.start()
    with pytest.raises(GetTimeoutError):
        rayx.get(slow, timeout=3)
    closer.join()
    assert peer.closed                                  # handled as a lost worker
    assert rayx.wait([slow], timeout=1) == ([], [slow])
    assert rayx.get(slow, timeout=60) == 10             # it ran again on another worker


@pytest.mark.timeout(180)
def test_wait_with_timeouts_while_leased_workers_are_killed(rayx_fresh):
    core = context.core_worker()
    killed = []
    stop = threading.Event()

    def kill_leased_workers():
        # Only workers of this test's node, lent to this driver.
        while not stop.wait(0.3):
            pids = [lease.pid for lease in _leases(core)]
            if pids:
                victim = pids[len(killed) % len(pids)]
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                except ProcessLookupError:
                    pass

    killer = threading.Thread(target=kill_leased_workers, daemon=True)
    killer.start()
    try:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            refs = [quick.remote(i) for i in range(200)]
            pending = refs
            while pending:      # every wait returns (in time) or the test times out
                _, pending = rayx.wait(pending, num_returns=min(50, len(pending)), timeout=0.2)
            assert rayx.get(refs, timeout=60) == list(range(200))
    finally:
        stop.set()
        killer.join(30)
    assert killed
