"""A raylet's view of the other nodes, and what it sends them over gRPC.

The live nodes come from the GCS ``nodes`` table (``refresh``, with every
heartbeat and whenever a node we do not know of shows up); ``on_nodes_changed``
is called when the set of live nodes changed, ``on_node_dead`` for each node
that left it (the monitor marked it dead, or it stopped), and
``on_self_dead`` when the table says this node is dead (it must stop). A dead
node stays dead: nothing more is sent to it and nothing it says is taken.
Messages to a node (tasks to run, results of tasks it forwarded, frees of
copies it holds for us) are queued per node and sent as one batched RPC per
node per event-loop turn, over one reused channel per node; every call
carries the cluster token and a deadline.
"""
import asyncio
import logging

import grpc

from rayx.gcs import tables
from rayx.protos import rayx_pb2, rayx_pb2_grpc

logger = logging.getLogger("rayx.raylet")

MAX_MESSAGE = 64 << 20
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE),
                   ("grpc.max_send_message_length", MAX_MESSAGE)]
CALL_TIMEOUT = 30.0


class Peers:
    def __init__(self, loop, node_id, token, gcs, on_nodes_changed, on_node_dead, on_self_dead):
        self.loop = loop
        self.node_id = node_id
        self.metadata = (("rayx-token", token),)
        self.nodes = {}            # node id -> heartbeat record of live nodes (self included)
        self._gcs = gcs
        self._on_nodes_changed = on_nodes_changed
        self._on_node_dead = on_node_dead
        self._on_self_dead = on_self_dead
        self.dead = set()          # ids of nodes known dead
        self._addresses = {}       # node id -> ip address, of every node in the table
        self._has_peers = False
        self._channels = {}
        self._forward = {}
        self._ready = {}
        self._free = {}
        self._flush_scheduled = False
        self.on_forward_failed = None   # (node id, [spec blob]) of a ForwardTasks that failed

    # ------------------------------------------------------------- nodes

    async def refresh(self):
        """Re-read the nodes from the GCS."""
        try:
            records = await self.loop.run_in_executor(None, tables.NODES.scan, self._gcs)
        except Exception:
            logger.exception("reading the node table")
            return
        self.update(records)

    def update(self, records):
        """Take a fresh read of the node table ({node id: record})."""
        alive = {}
        for node_id, record in records.items():
            self._addresses[node_id] = record.get("node_ip_address", "?")
            if tables.is_alive(record) and node_id not in self.dead:
                alive[node_id] = record
            else:
                self.dead.add(node_id)
        if self.node_id in self.dead:
            self._on_self_dead()
            return
        changed = set(alive) != set(self.nodes)
        gone = [node_id for node_id in self.nodes if node_id not in alive]
        self.nodes = alive
        self._has_peers = any(node_id != self.node_id for node_id in alive)
        for node_id in gone:
            self.dead.add(node_id)
            channel = self._channels.pop(node_id, None)
            if channel is not None:
                self.loop.create_task(channel.close())
            self._forward.pop(node_id, None)
            self._ready.pop(node_id, None)
            self._free.pop(node_id, None)
        if gone and self._channels.get("head") is not None and self.head_address() is None:
            self.loop.create_task(self._channels.pop("head").close())
        for node_id in gone:
            self._on_node_dead(node_id)
        if changed:
            self._on_nodes_changed()

    def is_dead(self, node_id):
        return node_id in self.dead

    def describe(self, node_id):
        """A node for messages: "node 0123456789ab (127.0.0.3, dead)"."""
        state = "dead" if node_id in self.dead else "alive" if node_id in self.nodes else "unknown"
        return f"node {node_id.hex()[:12]} ({self._addresses.get(node_id, '?')}, {state})"

    def has_peers(self):
        return self._has_peers

    def heard_from(self, node_id):
        """Another node talked to us: it exists, even if our last read of the node
        table predates it; read the table again for its address."""
        if node_id not in self.nodes and node_id not in self.dead:
            self._has_peers = True
            self.loop.create_task(self.refresh())

    def head_address(self):
        for record in self.nodes.values():
            if record.get("is_head"):
                return record.get("grpc_address")
        return None

    def _channel(self, key, address):
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return channel

    def node_stub(self, node_id):
        record = self.nodes.get(node_id)
        if record is None or not record.get("grpc_address"):
            return None
        return rayx_pb2_grpc.NodeServiceStub(self._channel(node_id, record["grpc_address"]))

    def scheduler_stub(self):
        address = self.head_address()
        if address is None:
            return None
        return rayx_pb2_grpc.GlobalSchedulerStub(self._channel("head", address))

    # ----------------------------------------------------------- batching

    def forward(self, node_id, spec_blob):
        if node_id in self.dead:
            self.loop.call_soon(self._forward_failed, node_id, [spec_blob])
            return
        self._forward.setdefault(node_id, []).append(spec_blob)
        self._schedule_flush()

    def object_ready(self, node_id, ready_object):
        if node_id in self.dead:
            return
        self._ready.setdefault(node_id, []).append(ready_object)
        self._schedule_flush()

    def free(self, node_id, object_id):
        if node_id in self.dead:
            return
        self._free.setdefault(node_id, []).append(object_id)
        self._schedule_flush()

    def _schedule_flush(self):
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self):
        self._flush_scheduled = False
        forward, self._forward = self._forward, {}
        ready, self._ready = self._ready, {}
        free, self._free = self._free, {}
        for node_id, specs in forward.items():
            self.loop.create_task(self._send_tasks(node_id, specs))
        for node_id, objects in ready.items():
            self.loop.create_task(self._call(node_id, "ObjectsReady", rayx_pb2.ObjectsReadyRequest(
                from_node_id=self.node_id, objects=objects)))
        for node_id, object_ids in free.items():
            self.loop.create_task(self._call(node_id, "FreeObjects", rayx_pb2.FreeObjectsRequest(
                object_ids=object_ids, from_node_id=self.node_id)))

    async def _send_tasks(self, node_id, specs):
        ok = await self._call(node_id, "ForwardTasks", rayx_pb2.ForwardTasksRequest(
            from_node_id=self.node_id, specs=specs))
        if not ok:
            self._forward_failed(node_id, specs)

    def _forward_failed(self, node_id, specs):
        if self.on_forward_failed is not None:
            self.on_forward_failed(node_id, specs)

    async def _call(self, node_id, method, request):
        if node_id in self.dead:
            return False
        stub = self.node_stub(node_id)
        if stub is None:
            await self.refresh()      # it may have joined since our last heartbeat
            stub = self.node_stub(node_id)
        if stub is None:
            logger.warning("%s to node %s: the node is not alive", method, node_id.hex()[:12])
            return False
        for attempt in range(3):
            if node_id in self.dead:
                return False
            try:
                reply = await getattr(stub, method)(request, metadata=self.metadata, timeout=CALL_TIMEOUT)
                return reply.ok
            except grpc.aio.AioRpcError as exc:
                logger.warning("%s to node %s failed (%s); attempt %d", method, node_id.hex()[:12],
                               exc.code(), attempt + 1)
                await asyncio.sleep(0.1 * (attempt + 1))
        return False
