"""The global scheduler as a gRPC service (GlobalScheduler.Schedule).

Stateless by design: it reads the nodes' heartbeats and the objects' locations
from the GCS, and keeps only a short-lived count of the tasks it placed on each
node since that node's last heartbeat, so a burst of placements spreads out.
Any number of replicas could serve it; today the head raylet hosts one.
"""
import asyncio
import time

from rayx._core import codec
from rayx.protos import rayx_pb2, rayx_pb2_grpc
from rayx.gcs.tables import object_locations
from rayx.scheduler.policy import choose_node, fits

NODES_CACHE_SECONDS = 0.05


class GlobalSchedulerService(rayx_pb2_grpc.GlobalSchedulerServicer):
    def __init__(self, gcs):
        self.gcs = gcs
        self._nodes = []
        self._nodes_read_at = 0.0
        self._placed_since = {}    # node id -> (heartbeat seen, tasks placed since)

    async def _live_nodes(self, fresh=False):
        now = time.monotonic()
        if fresh or now - self._nodes_read_at > NODES_CACHE_SECONDS:
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(None, self.gcs.scan, "nodes")
            nodes = [codec.loads(blob) for blob in rows.values()]
            self._nodes = [n for n in nodes if n.get("state") == "ALIVE"]
            self._nodes_read_at = now
        return self._nodes

    async def _input_locations(self, spec):
        refs = spec.arg_refs()
        if not refs:
            return {}
        loop = asyncio.get_running_loop()
        locations = {}
        for object_id in refs:
            locations[object_id] = await loop.run_in_executor(None, object_locations, self.gcs, object_id)
        return locations

    def _extra_queued(self, nodes):
        extra = {}
        for node in nodes:
            seen, count = self._placed_since.get(node["node_id"], (None, 0))
            if seen != node.get("heartbeat"):
                count = 0
                self._placed_since[node["node_id"]] = (node.get("heartbeat"), 0)
            extra[node["node_id"]] = count
        return extra

    async def Schedule(self, request, context):
        specs = [codec.loads(blob) for blob in request.specs]
        nodes = await self._live_nodes()
        if any(not any(fits(n.get("resources_total", {}), s.resources) for n in nodes) for s in specs):
            nodes = await self._live_nodes(fresh=True)   # a node that fits may just have joined
        by_id = {n["node_id"]: n for n in nodes}
        extra = self._extra_queued(nodes)
        reply = rayx_pb2.ScheduleReply()
        for spec in specs:
            placement = choose_node(spec, nodes, await self._input_locations(spec), extra)
            node = by_id.get(placement.node_id)
            if node is not None:
                extra[placement.node_id] = extra.get(placement.node_id, 0) + 1
                seen, _ = self._placed_since.get(placement.node_id, (None, 0))
                self._placed_since[placement.node_id] = (seen, extra[placement.node_id])
            reply.placements.add(node_id=placement.node_id, infeasible=placement.infeasible,
                                 grpc_address=node.get("grpc_address", "") if node else "")
        return reply
