"""A raylet's view of the other nodes, and what it sends them over gRPC.

The live nodes come from the GCS ``nodes`` table (``refresh``, with every
heartbeat and whenever a node we do not know of shows up); ``on_nodes_changed``
is called when the set of live nodes changed.
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
    def __init__(self, loop, node_id, token, gcs, on_nodes_changed):
        self.loop = loop
        self.node_id = node_id
        self.metadata = (("rayx-token", token),)
        self.nodes = {}            # node id -> heartbeat record of live nodes (self included)
        self._gcs = gcs
        self._on_nodes_changed = on_nodes_changed
        self._has_peers = False
        self._channels = {}
        self._forward = {}
        self._ready = {}
        self._free = {}
        self._flush_scheduled = False
        self.on_forward_failed = None   # (node id, [spec blob]) of a ForwardTasks that failed

    # ------------------------------------------------------------- nodes

    async def refresh(self):
        """Re-read the live nodes from the GCS."""
        try:
            alive = await self.loop.run_in_executor(None, tables.alive_nodes, self._gcs)
        except Exception:
            logger.exception("reading the node table")
            return
        if self.update(alive):
            self._on_nodes_changed()

    def update(self, alive):
        """Take a fresh read of the live nodes ({node id: record}); return True when
        their set changed."""
        changed = set(alive) != set(self.nodes)
        self.nodes = alive
        self._has_peers = any(node_id != self.node_id for node_id in alive)
        for node_id in list(self._channels):
            if node_id not in alive and node_id != "head":
                self.loop.create_task(self._channels.pop(node_id).close())
        return changed

    def has_peers(self):
        return self._has_peers

    def heard_from(self, node_id):
        """Another node talked to us: it exists, even if our last read of the node
        table predates it; read the table again for its address."""
        if node_id not in self.nodes:
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
        self._forward.setdefault(node_id, []).append(spec_blob)
        self._schedule_flush()

    def object_ready(self, node_id, ready_object):
        self._ready.setdefault(node_id, []).append(ready_object)
        self._schedule_flush()

    def free(self, node_id, object_id):
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
            self.loop.create_task(self._call(node_id, "FreeObjects",
                                             rayx_pb2.FreeObjectsRequest(object_ids=object_ids)))

    async def _send_tasks(self, node_id, specs):
        ok = await self._call(node_id, "ForwardTasks", rayx_pb2.ForwardTasksRequest(
            from_node_id=self.node_id, specs=specs))
        if not ok and self.on_forward_failed is not None:
            self.on_forward_failed(node_id, specs)

    async def _call(self, node_id, method, request):
        stub = self.node_stub(node_id)
        if stub is None:
            await self.refresh()      # it may have joined since our last heartbeat
            stub = self.node_stub(node_id)
        if stub is None:
            logger.warning("%s to node %s: the node is not alive", method, node_id.hex()[:12])
            return False
        for attempt in range(3):
            try:
                reply = await getattr(stub, method)(request, metadata=self.metadata, timeout=CALL_TIMEOUT)
                return reply.ok
            except grpc.aio.AioRpcError as exc:
                logger.warning("%s to node %s failed (%s); attempt %d", method, node_id.hex()[:12],
                               exc.code(), attempt + 1)
                await asyncio.sleep(0.1 * (attempt + 1))
        return False
