"""Fuzzing the node's sockets (bounded): random and mutated frames on the
raylet's Unix socket, on an actor worker's own socket and on the raylet's gRPC
port. After each round a normal workload must still pass, the raylet and the
worker must still be the same processes, the status request must still work,
and the raylet's object table must hold nothing new."""
import os
import random
import socket
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rayx
from helpers import wait_for
from rayx import messages
from rayx._core import codec
from rayx.runtime import context

pytestmark = pytest.mark.timeout(300)

CLIENT_MESSAGES = [m for m in messages.ALL.values() if m.direction == "client -> raylet"]
LINK_MESSAGES = [m for m in messages.ALL.values() if m.direction == "caller -> worker"]

# Values of every kind the codec can carry, most of them wrong for any given field.
any_value = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False) | st.binary(max_size=80) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.binary(max_size=20) | st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def node():
    rayx.init(num_cpus=1)
    yield
    rayx.shutdown()


@rayx.remote
def add_one(x):
    return x + 1


@rayx.remote
class Echo:
    def pid(self):
        return os.getpid()

    def echo(self, x):
        return x


def raylet_socket():
    [record] = [n for n in rayx.nodes() if n["Alive"]]
    return record["RayletSocketName"]


def raylet_process():
    return psutil.Process(context.started_node().raylet.pid)


def object_count():
    return context.core_worker().request("status")["objects_detail"]["objects"]


def still_works(baseline_objects):
    assert rayx.get([add_one.remote(i) for i in range(20)], timeout=60) == list(range(1, 21))
    assert rayx.get(rayx.put(b"x" * 200_000), timeout=60) == b"x" * 200_000
    # Nothing the fuzzer sent stays in the object table.
    assert wait_for(lambda: object_count() <= baseline_objects, timeout=30), object_count()


def send(path, payload):
    """Send ``payload`` on a new connection to ``path`` and close it (the other end
    may close first: that is the point)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)
        except OSError:
            pass


def mutated(message, values, registered):
    """A frame of ``message`` with ``values`` in its fields (after a valid REGISTER
    when ``registered``), most of them of the wrong kind."""
    fields = (values + [None] * len(message.fields))[:len(message.fields)]
    frames = [message(*fields)]
    if registered:
        frames.insert(0, messages.REGISTER("driver", b"", os.getpid(), b"\xfe\xff\xff\xff", {}))
    return codec.pack_frames(frames)


def test_random_bytes_on_the_raylet_socket(node):
    path = raylet_socket()
    raylet = raylet_process()
    baseline = object_count()
    rng = random.Random(1)
    for _ in range(200):
        payload = b"".join(len(chunk).to_bytes(4, "little") + chunk if rng.random() < 0.5 else chunk
                           for chunk in (rng.randbytes(rng.randrange(1, 200)) for _ in range(10)))
        send(path, payload)
    assert raylet.is_running()
    still_works(baseline)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=st.sampled_from(CLIENT_MESSAGES), values=st.lists(any_value, max_size=6),
       registered=st.booleans())
def test_mutated_messages_on_the_raylet_socket(node, message, values, registered):
    try:
        payload = mutated(message, values, registered)
    except Exception:
        return                   # the codec cannot carry it (a float too big, ...): nothing to send
    send(raylet_socket(), payload)


def test_the_raylet_survives_the_mutated_messages(node):
    """Runs after the hypothesis test above: the same raylet, working, nothing left."""
    baseline = object_count()
    raylet = raylet_process()
    assert raylet.is_running()
    still_works(baseline)
    assert raylet_process().pid == raylet.pid


def test_known_bad_messages_close_their_connection_and_change_nothing(node):
    """From the issue: a PUT whose size is a dict broke the status request for good;
    a SUBMIT of a million returns cost 500 MB. Each sender stays connected while we
    look: the raylet must have closed it, and hold nothing of what it sent."""
    baseline = object_count()
    register = messages.REGISTER("driver", b"", os.getpid(), b"\xfe\xff\xff\xff", {})
    spec = codec.TaskSpec(task_id=b"\x01" * 16, job_id=b"\xfe\xff\xff\xff", num_returns=10 ** 6)
    for bad in (messages.PUT(b"\x02" * 20, b"data", {"size": 1}, []), messages.SUBMIT(spec),
                messages.REFS([b"\x03" * 20, 7], [])):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(raylet_socket())
            sock.sendall(codec.pack_frames([register, bad]))
            reader = codec.FrameReader()
            while True:                       # REGISTERED, then the close
                data = sock.recv(65536)
                if not data:
                    break
                reader.feed(data)
            assert "objects_detail" in context.core_worker().request("status")
            assert object_count() <= baseline
    still_works(baseline)


def actor_socket(pid):
    """The Unix socket the actor's worker listens on for direct calls."""
    process = psutil.Process(pid)
    paths = [c.laddr for c in process.net_connections(kind="unix")] \
        if hasattr(process, "net_connections") else [c.laddr for c in process.connections(kind="unix")]
    paths = [p for p in paths if p and "worker" in os.path.basename(p)]
    assert paths, f"no listening socket of worker {pid}"
    return paths[0]


def test_frames_on_an_actor_workers_socket(node):
    actor = Echo.remote()
    pid = rayx.get(actor.pid.remote(), timeout=60)
    path = actor_socket(pid)
    rng = random.Random(2)
    for i in range(200):
        if i % 2:
            payload = rng.randbytes(rng.randrange(1, 300))
        else:
            message = rng.choice(LINK_MESSAGES)
            values = [rng.choice([None, 1, -1, b"x", "x", [b"y"], {"a": 1}, 10 ** 6])
                      for _ in message.fields]
            payload = codec.pack_frames([message(*values)])
        send(path, payload)
    assert psutil.pid_exists(pid)
    assert rayx.get(actor.echo.remote(41), timeout=60) == 41
    assert rayx.get(actor.pid.remote(), timeout=60) == pid
    rayx.kill(actor)


def test_bytes_on_the_grpc_port(node):
    baseline = object_count()
    record = context.core_worker().request("status")
    host, port = record["grpc_address"].rsplit(":", 1)
    rng = random.Random(3)
    for _ in range(100):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            try:
                sock.sendall(rng.randbytes(rng.randrange(1, 2000)))
                sock.settimeout(2)
                sock.recv(4096)
            except OSError:
                pass
    time.sleep(0.2)
    still_works(baseline)
