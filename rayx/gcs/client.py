"""GcsClient: the tables of the GCS over the primary and the data shards.

A table is a Redis key space: the row ``key`` of table ``T`` is the Redis key
``b"T:" + key``.  Values are opaque bytes; callers encode them.

Where a row lives.  The cluster-level tables (CLUSTER_TABLES, marked in
tables.py, where every table is defined: nodes, jobs, named actors) are small
and read as a whole, so they live on the primary shard.  Every other table
(functions, actors, tasks, objects, ...) is spread over the data shards by
``zlib.crc32(key) % len(data_shards)``, where
``key`` is the row key *without* the table prefix: the ids are random, so any
stable function balances, and rows of different tables about the same id
land on the same shard.  The order of the data shards is the order of the
``rayx:shards`` list on the primary, written once by start_gcs, so every
client computes the same placement.  Counters (``incr``) and pub/sub live on
the primary (Redis pub/sub is per server).

Throughput.  Writes off the critical path (lineage, task states, object
locations) go through a BatchWriter: appends are non-blocking and a daemon
thread sends everything pending as one pipeline per shard, never one round
trip per write.  Reads that fetch many rows (get_many, scan, scan_hashes) are
pipelined per shard too.

Failures.  Each shard connection reconnects and retries by itself (see
connection.py); a Subscription resubscribes after its connection comes back.
Messages published while a subscriber was disconnected are lost (Redis
pub/sub keeps no history), so subscribers that care re-read the tables from
``on_resubscribe``.
"""

import collections
import logging
import threading
import time
import zlib

from .connection import ConnectionLost, RedisConnection, RedisError
from .server import SHARDS_KEY
from .tables import CLUSTER_TABLES

__all__ = ["GcsClient", "BatchWriter", "Subscription"]

logger = logging.getLogger(__name__)

_COUNTER_PREFIX = b"rayx:counter:"
_SCAN_COUNT = 1000


def _b(x):
    if type(x) is bytes:
        return x
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError("expected bytes or str, got %s" % type(x).__name__)


def _split_address(address):
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("a GCS address is 'host:port', not %r" % (address,))
    return host, int(port)


def _glob_escape(raw):
    out = bytearray()
    for c in raw:
        if c in b"*?[]\\":
            out += b"\\"
        out.append(c)
    return bytes(out)


class GcsClient:
    """The GCS tables, given the primary's address and the cluster password.

    Connects to the primary and every data shard at once; like every later
    command, connecting retries for up to ``retry_timeout`` seconds while a
    shard is unreachable (a wrong password fails at once with
    AuthenticationError).  Thread-safe: one locked connection per shard.
    """

    def __init__(self, address, password, timeout=10.0, retry_timeout=30.0):
        self.address = address
        self.password = password
        self._timeout = timeout
        self._retry_timeout = retry_timeout
        self._closed = False
        self._writers = []
        self._subscriptions = []
        host, port = _split_address(address)
        self._primary = self._connect(host, port)
        try:
            raw = self._primary.execute("LRANGE", SHARDS_KEY, 0, -1) or []
            self.shard_addresses = [a.decode() for a in raw]
            self._shards = [self._connect(*_split_address(a)) for a in self.shard_addresses]
        except BaseException:
            self.close()
            raise
        if not self._shards:                  # no data shards: the primary holds all
            self._shards = [self._primary]
            self.shard_addresses = [address]
        self._nshards = len(self._shards)

    def _connect(self, host, port):
        return RedisConnection(host, port, self.password, timeout=self._timeout,
                               retry_timeout=self._retry_timeout)

    def __repr__(self):
        return "GcsClient(%s, shards=%s)" % (self.address, self.shard_addresses)

    # -- placement -------------------------------------------------------------

    def _conn(self, table, key):
        if table in CLUSTER_TABLES:
            return self._primary
        return self._shards[zlib.crc32(key) % self._nshards]

    def shard_address(self, table, key):
        """The "host:port" of the shard that holds ``key`` of ``table``."""
        return self._conn(table, _b(key)).address

    def _table_conns(self, table):
        return [self._primary] if table in CLUSTER_TABLES else list(self._shards)

    @staticmethod
    def _key(table, key):
        return b"%s:%s" % (table.encode(), key)

    # -- strings -----------------------------------------------------------------

    def put(self, table, key, value):
        key = _b(key)
        self._conn(table, key).execute("SET", self._key(table, key), _b(value))

    def put_if_absent(self, table, key, value):
        """Set only if the row does not exist; True if this call created it."""
        key = _b(key)
        return self._conn(table, key).execute("SET", self._key(table, key), _b(value), "NX") is not None

    def get(self, table, key):
        key = _b(key)
        return self._conn(table, key).execute("GET", self._key(table, key))

    def get_many(self, table, keys):
        """Values of ``keys`` in order (None where absent); one MGET per shard."""
        keys = [_b(k) for k in keys]
        out = [None] * len(keys)
        groups = collections.defaultdict(list)   # conn -> indices into keys
        for i, k in enumerate(keys):
            groups[self._conn(table, k)].append(i)
        for conn, idx in groups.items():
            values = conn.execute("MGET", *[self._key(table, keys[i]) for i in idx])
            for i, v in zip(idx, values):
                out[i] = v
        return out

    def delete(self, table, key):
        key = _b(key)
        self._conn(table, key).execute("DEL", self._key(table, key))

    def scan(self, table):
        """Every string row of ``table``: {key: value}, using SCAN + MGET per shard."""
        n = len(table.encode()) + 1
        result = {}
        for conn, keys in self._scan_keys(table, "string"):
            for k, v in zip(keys, conn.execute("MGET", *keys)):
                if v is not None:           # deleted since SCAN saw it
                    result[k[n:]] = v
        return result

    def scan_hashes(self, table):
        """Every hash row of ``table``: {key: {field: value}}, using SCAN + an HGETALL
        pipeline per shard."""
        n = len(table.encode()) + 1
        result = {}
        for conn, keys in self._scan_keys(table, "hash"):
            for k, flat in zip(keys, conn.pipeline([("HGETALL", k) for k in keys])):
                if isinstance(flat, list) and flat:   # not deleted since SCAN saw it
                    result[k[n:]] = dict(zip(flat[::2], flat[1::2]))
        return result

    def _scan_keys(self, table, kind):
        """(shard connection, a batch of its Redis keys of ``table``'s rows of type ``kind``)."""
        pattern = _glob_escape(table.encode() + b":") + b"*"
        for conn in self._table_conns(table):
            cursor = b"0"
            while True:
                cursor, keys = conn.execute("SCAN", cursor, "MATCH", pattern,
                                            "COUNT", _SCAN_COUNT, "TYPE", kind)
                if keys:
                    yield conn, keys
                if cursor == b"0":
                    break

    # -- hashes and sets ---------------------------------------------------------

    def hset(self, table, key, field, value):
        key = _b(key)
        self._conn(table, key).execute("HSET", self._key(table, key), _b(field), _b(value))

    def hgetall(self, table, key):
        key = _b(key)
        flat = self._conn(table, key).execute("HGETALL", self._key(table, key))
        return dict(zip(flat[::2], flat[1::2]))

    def hdel(self, table, key, field):
        key = _b(key)
        self._conn(table, key).execute("HDEL", self._key(table, key), _b(field))

    def sadd(self, table, key, member):
        key = _b(key)
        self._conn(table, key).execute("SADD", self._key(table, key), _b(member))

    def srem(self, table, key, member):
        key = _b(key)
        self._conn(table, key).execute("SREM", self._key(table, key), _b(member))

    def smembers(self, table, key):
        key = _b(key)
        return set(self._conn(table, key).execute("SMEMBERS", self._key(table, key)))

    # -- primary-only --------------------------------------------------------------

    def incr(self, name):
        """Increment the counter ``name`` on the primary; the new value.

        After a lost connection the retry may increment twice: values are
        unique and increasing, not necessarily contiguous.
        """
        return self._primary.execute("INCR", _COUNTER_PREFIX + _b(name))

    def publish(self, channel, data):
        """Publish on the primary; the number of subscribers that received it."""
        return self._primary.execute("PUBLISH", channel, _b(data))

    def subscribe(self, channels, callback, on_resubscribe=None):
        """Call ``callback(channel, data)`` for each message, from a daemon thread.

        Returns once the server has confirmed the subscription, so a message
        published after this returns is delivered.
        """
        host, port = _split_address(self.address)
        sub = Subscription(host, port, self.password, channels, callback,
                           on_resubscribe=on_resubscribe, timeout=self._timeout)
        self._subscriptions.append(sub)
        return sub

    def batch_writer(self, flush_interval=0.005, max_batch=1000):
        w = BatchWriter(self, flush_interval=flush_interval, max_batch=max_batch)
        self._writers.append(w)
        return w

    def close(self):
        if self._closed:
            return
        self._closed = True
        for w in self._writers:
            try:
                w.close(timeout=self._retry_timeout)
            except Exception:
                logger.exception("closing a GCS batch writer")
        for s in self._subscriptions:
            s.close()
        conns = {id(c): c for c in [getattr(self, "_primary", None)] + getattr(self, "_shards", [])
                 if c is not None}
        for c in conns.values():
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BatchWriter:
    """Non-blocking writes, sent by a daemon thread as one pipeline per shard.

    The thread wakes every ``flush_interval`` seconds (sooner once
    ``max_batch`` writes are pending, or on flush()) and sends what is pending,
    at most ``max_batch`` commands per pipeline.  Writes to one shard are sent
    in the order they were appended.  A failed pipeline (the shard
    unreachable even after the connection's own retries) is logged and kept
    at the head of the queue to be sent again; an error *reply* to one write
    (e.g. WRONGTYPE) cannot succeed on a retry, so it is logged and counted in
    ``errors``.  ``pipelines`` counts the round trips made, ``writes`` the
    commands sent.
    """

    def __init__(self, client, flush_interval=0.005, max_batch=1000):
        self._client = client
        self.flush_interval = flush_interval
        self.max_batch = max(1, int(max_batch))
        self.pipelines = 0    # round trips made
        self.writes = 0       # commands written
        self.errors = 0       # error replies (logged)
        self._cond = threading.Condition(threading.Lock())
        self._pending = []    # (conn, command) in append order
        self._appended = 0    # sequence number of the last append
        self._written = 0     # every append <= this has been written
        self._retry = {}      # conn -> [command] that failed, sent first next time
        self._flush_now = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="rayx-gcs-batch-writer", daemon=True)
        self._thread.start()

    def _append(self, conn, cmd):
        with self._cond:
            if self._stopping:
                raise RuntimeError("BatchWriter is closed")
            self._pending.append((conn, cmd))
            self._appended += 1
            n = len(self._pending)
            if n == 1 or n >= self.max_batch:   # wake an idle thread / a full batch
                self._cond.notify_all()

    def put(self, table, key, value):
        key = _b(key)
        c = self._client
        self._append(c._conn(table, key), ("SET", c._key(table, key), _b(value)))

    def delete(self, table, key):
        key = _b(key)
        c = self._client
        self._append(c._conn(table, key), ("DEL", c._key(table, key)))

    def hset(self, table, key, field, value):
        key = _b(key)
        c = self._client
        self._append(c._conn(table, key), ("HSET", c._key(table, key), _b(field), _b(value)))

    def sadd(self, table, key, member):
        key = _b(key)
        c = self._client
        self._append(c._conn(table, key), ("SADD", c._key(table, key), _b(member)))

    def publish(self, channel, data):
        self._append(self._client._primary, ("PUBLISH", channel, _b(data)))

    def flush(self, timeout=None):
        """Block until every write appended before this call has been written."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._appended
            while self._written < target:
                if not self._thread.is_alive():
                    raise RuntimeError("BatchWriter thread is not running; %d writes unsent"
                                       % (target - self._written))
                self._flush_now = True
                self._cond.notify_all()
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise TimeoutError("BatchWriter.flush timed out with %d writes unsent"
                                       % (target - self._written))
                self._cond.wait(wait if wait is not None else 1.0)

    def close(self, timeout=None):
        """Flush, then stop the thread."""
        if self._thread.is_alive():
            self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self):
        backoff = 0.05
        while True:
            with self._cond:
                if not (self._pending or self._retry or self._stopping):
                    self._cond.wait()          # idle: sleep until the first append
                if (not self._flush_now and not self._stopping and not self._retry
                        and len(self._pending) < self.max_batch):
                    self._cond.wait(self.flush_interval)   # let a batch gather
                if self._stopping and not self._pending and not self._retry:
                    return
                batch, self._pending = self._pending, []
                upto = self._appended
                self._flush_now = False
            if self._send(batch):
                backoff = 0.05
                with self._cond:
                    self._written = upto
                    self._cond.notify_all()
            else:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _send(self, batch):
        """Send retried commands, then ``batch``; True if nothing is left to retry."""
        per_conn = {}
        for conn, cmds in self._retry.items():
            per_conn[conn] = list(cmds)
        self._retry = {}
        for conn, cmd in batch:
            per_conn.setdefault(conn, []).append(cmd)
        for conn, cmds in per_conn.items():
            per_conn[conn] = _merge_sets(cmds)
        ok = True
        for conn, cmds in per_conn.items():
            for start in range(0, len(cmds), self.max_batch):
                chunk = cmds[start:start + self.max_batch]
                try:
                    replies = conn.pipeline(chunk)
                except Exception as e:   # ConnectionLost after retries, or a bug
                    logger.error("GCS batch write of %d commands to %s failed, will retry: %s",
                                 len(cmds) - start, conn.address, e)
                    self._retry[conn] = cmds[start:]
                    ok = False
                    break
                self.pipelines += 1
                self.writes += sum((len(cmd) - 1) // 2 if cmd[0] == "MSET" else 1 for cmd in chunk)
                for cmd, r in zip(chunk, replies):
                    if isinstance(r, RedisError):
                        self.errors += 1
                        logger.error("GCS batch write %s %r to %s failed: %s",
                                     cmd[0], cmd[1][:80], conn.address, r)
        return ok


def _merge_sets(cmds):
    """Fold runs of consecutive SETs into one MSET each (one reply instead of many;
    order between different commands is kept, and a later SET of a key still wins)."""
    merged = []
    run = []
    for cmd in cmds:
        if cmd[0] == "SET" and len(cmd) == 3:
            run.append(cmd)
            continue
        if run:
            merged.append(_mset(run))
            run = []
        merged.append(cmd)
    if run:
        merged.append(_mset(run))
    return merged


def _mset(run):
    if len(run) == 1:
        return run[0]
    args = ["MSET"]
    for _, key, value in run:
        args.append(key)
        args.append(value)
    return tuple(args)


class Subscription:
    """A daemon thread with its own connection to the primary, in SUBSCRIBE mode."""

    def __init__(self, host, port, password, channels, callback, on_resubscribe=None,
                 timeout=10.0, ready_timeout=30.0):
        self.channels = [c if isinstance(c, str) else c.decode() for c in channels]
        if not self.channels:
            raise ValueError("subscribe needs at least one channel")
        self._callback = callback
        self._on_resubscribe = on_resubscribe
        self._conn = RedisConnection(host, port, password, timeout=timeout, connect=False)
        self._closed = False
        self._ready = threading.Event()
        self._error = None
        self.resubscribes = 0
        self._thread = threading.Thread(target=self._run, name="rayx-gcs-subscriber", daemon=True)
        self._thread.start()
        if not self._ready.wait(ready_timeout):
            self.close()
            raise ConnectionLost("could not subscribe to %s at %s:%d" % (self.channels, host, port))
        if self._error is not None:
            raise self._error

    def _subscribe(self):
        """Connect and subscribe; returns once every channel is confirmed."""
        self._conn.reconnect_once()
        self._conn.send_raw(("SUBSCRIBE",) + tuple(self.channels))
        pending = set(self.channels)
        while pending:
            reply = self._conn.read_raw(timeout=self._conn.timeout)
            if reply is None:
                raise ConnectionLost("no SUBSCRIBE confirmation")
            if isinstance(reply, RedisError):
                raise reply
            if reply[0] == b"subscribe":
                pending.discard(reply[1].decode())
            elif reply[0] == b"message":
                self._deliver(reply)

    def _deliver(self, reply):
        try:
            self._callback(reply[1].decode(), reply[2])
        except Exception:
            logger.exception("GCS subscriber callback failed on channel %r", reply[1])

    def _run(self):
        try:
            self._loop()
        finally:
            self._conn.close()
            self._ready.set()

    def _loop(self):
        backoff = 0.01
        first = True
        while not self._closed:
            try:
                self._subscribe()
            except Exception as e:
                if self._closed:
                    break
                if first and isinstance(e, RedisError) and not isinstance(e, ConnectionLost):
                    self._error = e            # e.g. wrong password: report, stop
                    self._ready.set()
                    return
                logger.debug("GCS subscriber (re)connect failed: %s", e)
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.01
            if first:
                first = False
                self._ready.set()
            else:
                self.resubscribes += 1
                logger.info("GCS subscriber resubscribed to %s", self.channels)
                if self._on_resubscribe is not None:
                    try:
                        self._on_resubscribe()
                    except Exception:
                        logger.exception("GCS on_resubscribe callback failed")
            try:
                while not self._closed:
                    reply = self._conn.read_raw(timeout=1.0)
                    if reply is not None and type(reply) is list and reply[0] == b"message":
                        self._deliver(reply)
            except ConnectionLost as e:
                if not self._closed:
                    logger.warning("GCS subscriber lost its connection, resubscribing: %s", e)

    def close(self, timeout=5.0):
        self._closed = True
        self._conn.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
