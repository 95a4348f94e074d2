"""Bottom-up scheduling: keep a task on this node, or pass it up and forward it.

The local scheduler keeps a task when this node can run it, its ready queue
is short, and the task's inputs are not mostly elsewhere. Otherwise the task
goes (batched) to the global scheduler, which answers with a node; the task is
then forwarded to that node's raylet, or run here if that node is this one.
While another node runs it, this node holds the task's inputs (so they can be
pulled) and learns of its results when that node pushes them back.

Calls to an actor that lives on another node are forwarded to it directly,
in submission order; the node hosting the actor orders them per caller.
"""
import asyncio
import logging

import grpc

from rayx._core import codec
from rayx.protos import rayx_pb2
from rayx.raylet import tasks as t
from rayx.raylet.objects import READY

logger = logging.getLogger("rayx.raylet")

QUEUE_PER_CPU = 2              # ready tasks per CPU beyond which we ask the global scheduler
LOCALITY_BYTES = 1 << 20       # remote input bytes beyond which we ask the global scheduler
FORWARDED = 10                 # Task.state of a task another node runs


class Router:
    def __init__(self, raylet, peers):
        self.raylet = raylet
        self.peers = peers
        self.forwarded = {}          # task id -> Task run by another node (or being placed)
        self.actor_locations = {}    # actor id -> node id
        self._to_place = []
        self._actor_backlog = {}     # actor id -> [Task] waiting for the actor's location
        self.unplaced = []           # tasks no live node can run; retried when nodes join
        self._warned = set()         # ids of unplaced tasks the driver was warned about
        self._place_scheduled = False
        peers.on_forward_failed = self._forward_failed

    # --------------------------------------------------------------- route

    def route(self, task):
        """Take the task elsewhere if it should not run here; True when taken."""
        if not self.peers.has_peers():
            return False
        spec = task.spec
        if spec.task_type == codec.ACTOR_TASK:
            if spec.actor_id in self.raylet.actors.actors:
                return False
            self._hold(task)
            self._send_actor_call(task)
            return True
        if not self._should_place_globally(task):
            return False
        self._hold(task)
        self.place(task)
        return True

    def _should_place_globally(self, task):
        spec = task.spec
        raylet = self.raylet
        if spec.strategy == codec.STRATEGY_SPREAD:
            return True
        if spec.strategy == codec.STRATEGY_NODE_AFFINITY:
            return spec.strategy_node_id != raylet.node_id
        request = raylet.ready.request_for(task)
        if not raylet.resources.feasible(request):
            return True
        cpus = raylet.resources.total.get("CPU", 0) / 10000
        if len(raylet.ready) >= QUEUE_PER_CPU * max(1.0, cpus):
            return True
        remote_bytes = 0
        for object_id in task.deps:
            entry = raylet.objects.get(object_id)
            if entry is not None and entry.state != READY and entry.remote_locations:
                remote_bytes += entry.size
        return remote_bytes > LOCALITY_BYTES

    def _hold(self, task):
        """Keep the task's inputs alive here and make its results known here."""
        raylet = self.raylet
        raylet.track_dependencies(task, hold_inputs=True, wait=False)
        for object_id in task.spec.return_ids():
            raylet.objects.entry(object_id)
        task.state = FORWARDED
        self.forwarded[task.spec.task_id] = task

    def adopt(self, task):
        """Place a task this node already holds the inputs of (it was infeasible here)."""
        task.state = FORWARDED
        self.forwarded[task.spec.task_id] = task
        self.place(task)

    def adopt_call(self, task):
        """Forward an actor call this node already holds the inputs of."""
        task.state = FORWARDED
        self.forwarded[task.spec.task_id] = task
        self._send_actor_call(task)

    # -------------------------------------------------------- global placing

    def place(self, task):
        self._to_place.append(task)
        if not self._place_scheduled:
            self._place_scheduled = True
            self.raylet.loop.call_soon(lambda: self.raylet.loop.create_task(self._place_batch()))

    async def _place_batch(self):
        self._place_scheduled = False
        batch, self._to_place = self._to_place, []
        if not batch:
            return
        stub = self.peers.scheduler_stub()
        placements = None
        if stub is not None:
            try:
                reply = await stub.Schedule(
                    rayx_pb2.ScheduleRequest(specs=[task.spec.encode() for task in batch],
                                             from_node_id=self.raylet.node_id),
                    metadata=self.peers.metadata, timeout=30)
                placements = list(reply.placements)
            except grpc.aio.AioRpcError as exc:
                logger.warning("the global scheduler failed (%s); keeping %d task(s) local",
                               exc.code(), len(batch))
        for i, task in enumerate(batch):
            placement = placements[i] if placements else None
            if placement is None:
                self.run_here(task)
            elif placement.infeasible:
                self.unplaced.append(task)
                if task.spec.task_id not in self._warned:
                    self._warned.add(task.spec.task_id)
                    self.raylet.warn_infeasible(task)
            elif bytes(placement.node_id) == self.raylet.node_id:
                self.run_here(task)
            else:
                self.forward(task, bytes(placement.node_id))

    def run_here(self, task):
        self.forwarded.pop(task.spec.task_id, None)
        self._warned.discard(task.spec.task_id)
        task.state = t.WAITING
        self.raylet.submit_here(task, inputs_held=True)

    def forward(self, task, node_id):
        spec = task.spec
        self._warned.discard(spec.task_id)
        if spec.task_type == codec.ACTOR_CREATION_TASK:
            self.actor_locations[spec.actor_id] = node_id
            self._flush_backlog(spec.actor_id)
        self.peers.forward(node_id, spec.encode())

    def _forward_failed(self, node_id, specs):
        for blob in specs:
            spec = codec.loads(blob)
            task = self.forwarded.get(spec.task_id)
            if task is not None and spec.task_type != codec.ACTOR_TASK:
                self.place(task)

    def retry_unplaced(self):
        """Nodes joined or left: try again to place what fit nowhere."""
        tasks, self.unplaced = self.unplaced, []
        for task in tasks:
            self.place(task)

    # ----------------------------------------------------------- actor calls

    def _send_actor_call(self, task):
        actor_id = task.spec.actor_id
        node_id = self.actor_locations.get(actor_id)
        if node_id is not None and actor_id not in self._actor_backlog:
            self.peers.forward(node_id, task.spec.encode())
            return
        backlog = self._actor_backlog.get(actor_id)
        if backlog is None:
            backlog = self._actor_backlog[actor_id] = []
            self.raylet.loop.create_task(self._locate_actor(actor_id))
        backlog.append(task)

    async def _locate_actor(self, actor_id, timeout=60.0):
        loop = self.raylet.loop
        delay = 0.005
        deadline = loop.time() + timeout
        while actor_id not in self.actor_locations and loop.time() < deadline:
            if actor_id in self.raylet.actors.actors:
                break
            blob = await loop.run_in_executor(None, self.raylet.gcs.get, "actors", actor_id)
            if blob:
                self.actor_locations[actor_id] = codec.loads(blob)["node_id"]
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        self._flush_backlog(actor_id)

    def _flush_backlog(self, actor_id):
        backlog = self._actor_backlog.pop(actor_id, None)
        if not backlog:
            return
        node_id = self.actor_locations.get(actor_id)
        for task in backlog:
            if node_id is None:
                # Here after all, or nowhere (then the call fails with ActorDiedError).
                self.forwarded.pop(task.spec.task_id, None)
                self.raylet.release_inputs(task)
                self.raylet.actors.submit_call(task)
            else:
                self.peers.forward(node_id, task.spec.encode())

    def kill_remote_actor(self, actor_id, no_restart):
        node_id = self.actor_locations.get(actor_id)
        if node_id is None:
            blob = self.raylet.gcs.get("actors", actor_id)
            if blob is None:
                raise ValueError(f"no actor {actor_id.hex()} in the cluster")
            node_id = codec.loads(blob)["node_id"]
        stub = self.peers.node_stub(node_id)
        if stub is None:
            raise ValueError(f"the node of actor {actor_id.hex()} is not alive")
        self.raylet.loop.create_task(stub.KillActor(
            rayx_pb2.KillActorRequest(actor_id=actor_id, no_restart=no_restart),
            metadata=self.peers.metadata, timeout=30))
        return True

    # ------------------------------------------------------------- results

    def results_arrived(self, task_id):
        """The node running a forwarded task pushed its results: stop holding its inputs."""
        task = self.forwarded.pop(task_id, None)
        if task is not None:
            self.raylet.release_inputs(task)
