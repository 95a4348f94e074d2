"""Node failure detection: which nodes are dead, decided in one place.

Two signals, either one enough:

* **Heartbeats.** Every raylet rewrites its row of the GCS ``nodes`` table
  every 100 ms. The monitor reads the table every ``CHECK_INTERVAL`` and notes,
  on its own monotonic clock, when each node's heartbeat value last changed (so
  clocks of other machines do not matter). A node whose heartbeat has not
  changed for ``timeout_s`` is dead, unless the monitor's own node has gone
  as long without a heartbeat (then the GCS is what is slow, not the nodes).
* **The connection.** The monitor holds a ``Watch`` stream open to every
  live raylet. When it breaks, one probe (a new ``Watch`` with a short
  deadline) decides: no answer, or another node answering at that address,
  and the node is dead. A SIGKILLed raylet is found this way in well under a
  second.

A dead node is marked ``NODE_DEAD`` in its row (with ``death_reason`` and
``death_time``), its id is published on ``NODE_DEAD_CHANNEL``, and the
``on_dead`` coroutine runs on the head raylet: the head handles its own side
first (``rayx.raylet.failures``: the tasks it sent there come back), then the
recovery of the node's actors and the removal of its object locations
(``rayx.monitor.recovery``). Other raylets see the row change within a
heartbeat and handle their side. A dead node never
comes back: a row marked dead that is written ALIVE again (a late heartbeat
of a node that was only slow) is marked dead again, and the raylet that reads
its own row as dead stops. A node that restarts at the same address is a new
node with a new id.
"""
import asyncio
import logging
import time

import grpc

from rayx.gcs import tables
from rayx.protos import rayx_pb2, rayx_pb2_grpc

logger = logging.getLogger("rayx.monitor")

CHECK_INTERVAL = 0.2        # seconds between reads of the node table
PROBE_TIMEOUT = 2.0         # a Watch that does not answer within this after a break: dead
DEFAULT_TIMEOUT_S = 5.0     # heartbeats silent this long: dead (RAYX_NODE_TIMEOUT_S)


class NodeMonitor:
    def __init__(self, loop, node_id, gcs, metadata, channel_options, timeout_s=DEFAULT_TIMEOUT_S,
                 on_dead=None):
        self._loop = loop
        self._node_id = node_id          # the head's own node
        self._gcs = gcs
        self._metadata = metadata
        self._channel_options = channel_options
        self.timeout_s = timeout_s
        self._on_dead = on_dead          # coroutine function on_dead(node id, record)
        self._heard = {}                 # node id -> (heartbeat value, loop time it was first seen)
        self._watches = {}               # node id -> asyncio task holding its Watch stream
        self._watched = set()            # nodes seen alive (and watched) since the monitor started
        self._dead = set()
        self._stopping = False

    def start(self):
        self._loop.create_task(self._run())

    def stop(self):
        self._stopping = True
        for watch in self._watches.values():
            watch.cancel()

    # ---------------------------------------------------------- heartbeats

    async def _run(self):
        while not self._stopping:
            try:
                records = await self._loop.run_in_executor(None, tables.NODES.scan, self._gcs)
                await self._check(records)
            except Exception:
                logger.exception("checking the node table")
            await asyncio.sleep(CHECK_INTERVAL)

    async def _check(self, records):
        now = self._loop.time()
        for node_id, record in records.items():
            self._note_heartbeat(node_id, record.get("heartbeat"), now)
        own = self._heard.get(self._node_id)
        gcs_current = own is None or now - own[1] < self.timeout_s
        for node_id, record in records.items():
            if node_id == self._node_id:
                continue
            if not tables.is_alive(record):
                self._forget(node_id)
                if node_id in self._watched and node_id not in self._dead:
                    await self._declare(node_id, record.get("death_reason") or "it stopped")
                continue
            if node_id in self._dead:       # a late write of a node already declared dead
                await self._mark_dead(node_id, record, record.get("death_reason") or "declared dead")
                continue
            silent = now - self._heard[node_id][1]
            if silent > self.timeout_s and gcs_current:
                await self._declare(node_id, f"no heartbeat for {silent:.1f} s (timeout {self.timeout_s:g} s)")
            elif node_id not in self._watches and record.get("grpc_address"):
                self._watched.add(node_id)
                self._watches[node_id] = self._loop.create_task(self._watch(node_id, record["grpc_address"]))

    def _note_heartbeat(self, node_id, heartbeat, now):
        heard = self._heard.get(node_id)
        if heard is None or heard[0] != heartbeat:
            self._heard[node_id] = (heartbeat, now)

    def _forget(self, node_id):
        watch = self._watches.pop(node_id, None)
        if watch is not None:
            watch.cancel()

    # ---------------------------------------------------------- connections

    async def _watch(self, node_id, address):
        channel = grpc.aio.insecure_channel(address, options=self._channel_options)
        stub = rayx_pb2_grpc.NodeServiceStub(channel)
        try:
            while not self._stopping and node_id not in self._dead:
                try:
                    async for reply in stub.Watch(rayx_pb2.WatchRequest(), metadata=self._metadata):
                        if bytes(reply.node_id) != node_id:
                            await self._declare(node_id, f"another node now answers at {address}")
                            return
                except grpc.aio.AioRpcError:
                    pass
                if self._stopping:
                    return
                answer = await self._probe(stub)
                if answer == node_id:
                    continue                   # a passing break; watch again
                await self._declare(node_id, f"its raylet at {address} stopped answering" if answer is None
                                    else f"another node now answers at {address}")
                return
        except asyncio.CancelledError:
            pass
        finally:
            self._watches.pop(node_id, None)
            await channel.close()

    async def _probe(self, stub):
        """The node id answering a fresh Watch within PROBE_TIMEOUT, or None."""
        call = stub.Watch(rayx_pb2.WatchRequest(), metadata=self._metadata, timeout=PROBE_TIMEOUT)
        try:
            async for reply in call:
                return bytes(reply.node_id)
        except grpc.aio.AioRpcError:
            return None
        finally:
            call.cancel()
        return None

    # -------------------------------------------------------------- deaths

    async def _declare(self, node_id, reason):
        if node_id in self._dead or self._stopping:
            return
        self._dead.add(node_id)
        record = await self._loop.run_in_executor(None, tables.NODES.get, self._gcs, node_id)
        if record is None:
            return
        logger.warning("node %s (%s) is dead: %s", node_id.hex()[:12], record.get("node_ip_address"), reason)
        if tables.is_alive(record):
            await self._mark_dead(node_id, record, reason)
        if self._on_dead is not None:
            await self._on_dead(node_id, record)

    async def _mark_dead(self, node_id, record, reason):
        record = dict(record, state=tables.NODE_DEAD, death_reason=reason,
                      death_time=record.get("death_time") or time.time())
        gcs = self._gcs

        def write():
            tables.NODES.put(gcs, node_id, record)
            gcs.publish(tables.NODE_DEAD_CHANNEL, node_id)

        await self._loop.run_in_executor(None, write)
