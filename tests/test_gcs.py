"""Tests of the GCS: real redis-server shards, the connection and GcsClient.

Every test that starts shards does it in its own tmp dir through the ``gcs``
fixture (or ``helpers.running_gcs``), which asserts with psutil at the end that
none of the processes is left.  No timing assertions: only generous timeouts.
"""

import os
import queue
import signal
import socket
import threading
import time

import psutil
import pytest

from helpers import assert_gone, connections, running_gcs, wait_for

from rayx.gcs import (
    CLUSTER_TABLES,
    AuthenticationError,
    ConnectionLost,
    GcsClient,
    RedisConnection,
    RedisError,
    RedisShard,
    find_redis_server,
)
from rayx.gcs.server import SHARDS_KEY

PASSWORD = "test-token-\"quoted\" \\ and spaces"


@pytest.fixture
def gcs(tmp_path):
    with running_gcs(tmp_path / "gcs", PASSWORD, num_data_shards=2) as shards:
        yield shards


@pytest.fixture
def client(gcs):
    c = GcsClient(gcs[0].address, PASSWORD)
    yield c
    c.close()


def _conn(shard, password=PASSWORD):
    return RedisConnection(shard.host, shard.port, password)


# -- server ----------------------------------------------------------------------


def test_find_redis_server():
    path = find_redis_server()
    assert os.path.isfile(path) and os.access(path, os.X_OK)


def test_start_gcs_registers_shards(gcs):
    assert [s.name for s in gcs] == ["primary", "data-0", "data-1"]
    assert all(s.alive() for s in gcs)
    assert len({s.port for s in gcs}) == 3
    with _conn(gcs[0]) as c:
        assert c.execute("LRANGE", SHARDS_KEY, 0, -1) == [s.address.encode() for s in gcs[1:]]
    for s in gcs:
        assert os.path.exists(s.aof_path)
        assert os.stat(os.path.join(s.data_dir, "redis.conf")).st_mode & 0o077 == 0


def test_password_required(gcs):
    with RedisConnection(gcs[1].host, gcs[1].port, password=None) as c:
        with pytest.raises(RedisError, match="NOAUTH"):
            c.execute("GET", "x")
    with pytest.raises(AuthenticationError):
        RedisConnection(gcs[1].host, gcs[1].port, password="wrong")
    with pytest.raises(AuthenticationError):
        GcsClient(gcs[0].address, "wrong")


def test_binds_loopback_only(gcs):
    for s in gcs:
        proc = psutil.Process(s.pid)

        def listening_addresses():
            return [c.laddr for c in connections(proc, "tcp") if c.status == psutil.CONN_LISTEN]
        # (A listing taken while the machine is busy can miss the socket once: look again.)
        listening = wait_for(listening_addresses, timeout=10)
        assert listening, "shard %s listens nowhere" % s.name
        assert all(addr.ip == "127.0.0.1" and addr.port == s.port for addr in listening)
    # Connecting through any other local address is refused.
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for ip in others:
        with pytest.raises(OSError):
            socket.create_connection((ip, gcs[0].port), timeout=2).close()


def test_stop_and_restart_live_shard(tmp_path):
    shard = RedisShard("solo", str(tmp_path / "solo"), PASSWORD).start()
    pids = [shard.pid]
    try:
        with _conn(shard) as c:
            c.execute("SET", "k", "v")
        port = shard.port
        shard.restart()             # SIGTERM: redis fsyncs the AOF on the way out
        pids.append(shard.pid)
        assert shard.port == port and shard.alive()
        with _conn(shard) as c:
            assert c.execute("GET", "k") == b"v"
        old = shard.pid
        shard.stop()
        assert not shard.alive()
        assert_gone([old])
    finally:
        shard.stop()
        assert_gone(pids)


def test_die_with_parent(tmp_path):
    # A child python starts a shard with die_with_parent=True and is killed;
    # the shard must follow it.
    import subprocess
    import sys
    code = (
        "import sys, time\n"
        "from rayx.gcs import RedisShard\n"
        "s = RedisShard('x', sys.argv[1], 'pw', die_with_parent=True).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "x")],
                             stdout=subprocess.PIPE, env=env)
    try:
        pid = int(child.stdout.readline())
        assert psutil.pid_exists(pid)
    finally:
        child.kill()
        child.wait()
    assert wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                    timeout=20), "the shard did not die with its parent"


# -- connection -----------------------------------------------------------------------


def test_pipeline_in_order_with_error_reply(gcs):
    with _conn(gcs[1]) as c:
        replies = c.pipeline([
            ("SET", "p:k", b"v"),
            ("LPUSH", "p:k", "x"),           # WRONGTYPE in the middle
            ("GET", "p:k"),
            ("INCR", "p:n"),
            ("INCRBYFLOAT", "p:f", 1.5),
            ("GET", "p:missing"),
        ])
        assert replies[0] == b"OK"
        assert isinstance(replies[1], RedisError) and "WRONGTYPE" in str(replies[1])
        assert replies[2:] == [b"v", 1, b"1.5", None]
        assert c.pipeline([]) == []
        assert c.pipeline([("PING",)]) == [b"PONG"]
        with pytest.raises(RedisError, match="WRONGTYPE"):
            c.execute("LPUSH", "p:k", "x")
        with pytest.raises(TypeError):
            c.execute("SET", "k", None)


def test_connection_lost_after_retry_timeout(tmp_path):
    shard = RedisShard("gone", str(tmp_path / "gone"), PASSWORD).start()
    try:
        c = RedisConnection(shard.host, shard.port, PASSWORD, retry_timeout=0.5)
        shard.stop()
        with pytest.raises(ConnectionLost):
            c.execute("PING")
        c.close()
    finally:
        shard.stop()
    assert_gone([shard.pid])


def test_connection_thread_safety(gcs):
    with _conn(gcs[1]) as c:
        errors = []

        def work(t):
            try:
                for i in range(300):
                    key = "t%d:%d" % (t, i)
                    c.execute("SET", key, key)
                    assert c.execute("GET", key) == key.encode()
            except Exception as e:   # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors


# -- client tables ----------------------------------------------------------------------


def test_put_get_delete_scan_across_shards(gcs, client):
    assert client.shard_addresses == [s.address for s in gcs[1:]]
    rows = {os.urandom(16): os.urandom(40) for _ in range(300)}
    for k, v in rows.items():
        client.put("objects", k, v)
    # Keys really land on both data shards, where shard_address says.
    on_shard = {}
    for s in gcs[1:]:
        with _conn(s) as c:
            cursor, found = b"0", set()
            while True:
                cursor, keys = c.execute("SCAN", cursor, "MATCH", "objects:*", "COUNT", 1000)
                found.update(k[len(b"objects:"):] for k in keys)
                if cursor == b"0":
                    break
            on_shard[s.address] = found
    assert all(len(f) > 50 for f in on_shard.values())
    assert set.union(*on_shard.values()) == set(rows)
    for k in rows:
        assert k in on_shard[client.shard_address("objects", k)]
    with _conn(gcs[0]) as c:
        assert c.execute("DBSIZE") == 1   # only rayx:shards on the primary

    for k, v in rows.items():
        assert client.get("objects", k) == v
    keys = list(rows)[:50]
    missing = b"no-such-key"
    got = client.get_many("objects", [keys[0], missing] + keys[1:])
    assert got == [rows[keys[0]], None] + [rows[k] for k in keys[1:]]
    assert client.get_many("objects", []) == []
    assert client.scan("objects") == rows
    assert client.scan("tasks") == {}

    for k in keys:
        client.delete("objects", k)
    assert client.get("objects", keys[0]) is None
    assert client.scan("objects") == {k: v for k, v in rows.items() if k not in keys}


def test_cluster_tables_on_primary(gcs, client):
    assert "nodes" in CLUSTER_TABLES
    client.put("nodes", b"node-1", b"info")
    client.put("kv", "some key", "some value")
    assert client.shard_address("nodes", b"node-1") == gcs[0].address
    with _conn(gcs[0]) as c:
        assert c.execute("GET", b"nodes:node-1") == b"info"
    assert client.scan("nodes") == {b"node-1": b"info"}
    assert client.get("kv", b"some key") == b"some value"
    assert client.incr("job_counter") == 1
    assert client.incr("job_counter") == 2
    # scan does not mix tables whose names share a prefix, nor non-string rows
    client.put("nodes_extra", b"x", b"y")
    client.hset("nodes", b"h", b"f", b"v")
    assert client.scan("nodes") == {b"node-1": b"info"}


def test_put_if_absent(client):
    assert client.put_if_absent("functions", b"f1", b"one") is True
    assert client.put_if_absent("functions", b"f1", b"two") is False
    assert client.get("functions", b"f1") == b"one"


def test_hashes_and_sets(client):
    client.hset("objects", b"o1", b"node-a", b"1")
    client.hset("objects", b"o1", "node-b", b"2")
    assert client.hgetall("objects", b"o1") == {b"node-a": b"1", b"node-b": b"2"}
    client.hdel("objects", b"o1", b"node-a")
    assert client.hgetall("objects", b"o1") == {b"node-b": b"2"}
    assert client.hgetall("objects", b"none") == {}

    # scan_hashes reads every hash row over the shards, and only hash rows
    hashes = {b"h%d" % i: {b"node-%d" % i: b"%d" % i} for i in range(50)}
    for key, fields in hashes.items():
        for field, value in fields.items():
            client.hset("copies", key, field, value)
    client.put("copies", b"a-string", b"row")
    assert client.scan_hashes("copies") == hashes
    assert client.scan("copies") == {b"a-string": b"row"}
    assert client.scan_hashes("copies_extra") == {}

    client.sadd("locations", b"o1", b"n1")
    client.sadd("locations", b"o1", b"n2")
    client.sadd("locations", b"o1", b"n2")
    assert client.smembers("locations", b"o1") == {b"n1", b"n2"}
    client.srem("locations", b"o1", b"n1")
    assert client.smembers("locations", b"o1") == {b"n2"}
    assert client.smembers("locations", b"none") == set()


def test_batch_writer_10000_puts(client):
    w = client.batch_writer(flush_interval=0.005, max_batch=1000)
    rows = {b"%08d" % i: b"value-%d" % i for i in range(10000)}
    for k, v in rows.items():
        w.put("tasks", k, v)
    w.hset("objects", b"o", b"f", b"v")
    w.sadd("sets", b"s", b"m")
    w.flush(timeout=60)
    assert client.get_many("tasks", list(rows)) == list(rows.values())
    assert client.hgetall("objects", b"o") == {b"f": b"v"}
    assert client.smembers("sets", b"s") == {b"m"}
    assert w.writes == 10002 and w.errors == 0
    assert 0 < w.pipelines <= 200, w.pipelines     # vs 10,002 writes
    # The writer keeps working after a flush, and close() flushes.
    w.put("tasks", b"last", b"x")
    w.close(timeout=60)
    assert client.get("tasks", b"last") == b"x"
    with pytest.raises(RuntimeError):
        w.put("tasks", b"after-close", b"x")


def test_batch_writer_logs_error_replies(client, caplog):
    client.sadd("objects", b"a-set", b"m")
    w = client.batch_writer()
    w.put("objects", b"ok", b"1")
    w.hset("objects", b"a-set", b"f", b"v")   # WRONGTYPE
    w.flush(timeout=30)
    assert w.errors == 1
    assert "WRONGTYPE" in caplog.text
    assert client.get("objects", b"ok") == b"1"
    w.close()


def test_pubsub(client):
    got = queue.Queue()
    sub = client.subscribe(["node_added", "actor_state"], lambda ch, data: got.put((ch, data)))
    assert client.publish("node_added", b"n1") == 1
    client.publish("actor_state", b"a1")
    client.publish("other", b"ignored")
    w = client.batch_writer()
    w.publish("node_added", b"n2")
    w.flush(timeout=30)
    received = [got.get(timeout=20) for _ in range(3)]
    assert received == [("node_added", b"n1"), ("actor_state", b"a1"), ("node_added", b"n2")]
    sub.close()
    assert not sub._thread.is_alive()
    assert wait_for(lambda: client.publish("node_added", b"n3") == 0, timeout=20), "the server kept the subscriber"


def test_pubsub_callback_error_does_not_stop_delivery(client):
    got = queue.Queue()

    def cb(ch, data):
        if data == b"bad":
            raise ValueError("boom")
        got.put(data)

    sub = client.subscribe(["c"], cb)
    client.publish("c", b"bad")
    client.publish("c", b"good")
    assert got.get(timeout=20) == b"good"
    sub.close()


# -- failures ---------------------------------------------------------------------------


def test_data_shard_sigkill_and_restart(tmp_path):
    with running_gcs(tmp_path / "gcs", PASSWORD, num_data_shards=2, fsync="always") as shards:
        client = GcsClient(shards[0].address, PASSWORD)
        try:
            rows = {os.urandom(16): os.urandom(30) for _ in range(100)}
            for k, v in rows.items():
                client.put("actors", k, v)
            w = client.batch_writer()
            for i in range(500):
                w.put("tasks", b"t%d" % i, b"spec%d" % i)
            w.flush(timeout=30)

            victim = shards[1]
            old_pid, port = victim.pid, victim.port
            os.kill(old_pid, signal.SIGKILL)
            assert wait_for(lambda: not victim.alive(), timeout=20), "the SIGKILLed shard did not exit"

            victim.restart()
            assert victim.port == port and victim.pid != old_pid
            assert_gone([old_pid])

            # The existing client reconnects transparently and the data is back.
            for k, v in rows.items():
                assert client.get("actors", k) == v
            assert client.scan("tasks") == {b"t%d" % i: b"spec%d" % i for i in range(500)}
            assert client._shards[0].reconnects >= 1
            # The batch writer keeps working over the new connection too.
            w.put("tasks", b"after", b"restart")
            w.flush(timeout=30)
            assert client.get("tasks", b"after") == b"restart"
        finally:
            client.close()


def test_client_waits_for_shard_coming_back(tmp_path):
    # A write issued while the shard is down is retried until it is back.
    with running_gcs(tmp_path / "gcs", PASSWORD, num_data_shards=1, fsync="always") as shards:
        client = GcsClient(shards[0].address, PASSWORD)
        try:
            victim = shards[1]
            os.kill(victim.pid, signal.SIGKILL)
            assert wait_for(lambda: not victim.alive(), timeout=20), "the SIGKILLed shard did not exit"
            done = threading.Event()

            def write():
                client.put("objects", b"k", b"v")
                done.set()

            t = threading.Thread(target=write)
            t.start()
            time.sleep(0.3)
            victim.restart()
            t.join(30)
            assert done.is_set()
            assert client.get("objects", b"k") == b"v"
        finally:
            client.close()


def test_subscriber_resubscribes_after_primary_restart(tmp_path):
    with running_gcs(tmp_path / "gcs", PASSWORD, num_data_shards=1, fsync="always") as shards:
        client = GcsClient(shards[0].address, PASSWORD)
        got = queue.Queue()
        resubscribed = threading.Event()
        sub = client.subscribe(["ch"], lambda ch, data: got.put(data),
                               on_resubscribe=resubscribed.set)
        try:
            client.publish("ch", b"before")
            assert got.get(timeout=20) == b"before"
            os.kill(shards[0].pid, signal.SIGKILL)
            assert wait_for(lambda: not shards[0].alive(), timeout=20), "the primary did not exit"
            shards[0].restart()
            assert resubscribed.wait(30)
            assert client.publish("ch", b"after") == 1
            assert got.get(timeout=20) == b"after"
            # The primary's own data came back from its AOF.
            assert client.shard_addresses == [shards[1].address]
            with _conn(shards[0]) as c:
                assert c.execute("LRANGE", SHARDS_KEY, 0, -1) == [shards[1].address.encode()]
        finally:
            sub.close()
            client.close()


def test_restart_whole_gcs_from_data_dir(tmp_path):
    with running_gcs(tmp_path / "gcs", PASSWORD, num_data_shards=2) as shards:
        client = GcsClient(shards[0].address, PASSWORD)
        client.put("jobs", b"j1", b"job")
        client.put("functions", b"f1", b"fn")
        client.close()
    # Stopped with SIGTERM: the AOFs are fsynced.
    with running_gcs(tmp_path / "gcs", PASSWORD, num_data_shards=2, primary_port=shards[0].port) as shards:
        # Data shards get new ports; data is placed by key hash over the
        # (same number of) shards, so rows are found in their old dirs.
        client = GcsClient(shards[0].address, PASSWORD)
        assert client.get("jobs", b"j1") == b"job"
        assert client.get("functions", b"f1") == b"fn"
        client.close()
