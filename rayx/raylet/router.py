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
from rayx.gcs import tables
from rayx.protos import rayx_pb2
from rayx.raylet import tasks as t
from rayx.raylet.objects import READY
from rayx.raylet.resources import from_fixed
from rayx.raylet.waits import WaitRequest

logger = logging.getLogger("rayx.raylet")

QUEUE_PER_CPU = 2              # ready tasks per CPU beyond which we ask the global scheduler
LOCALITY_BYTES = 1 << 20       # remote input bytes beyond which we ask the global scheduler
FORWARDED = 10                 # Task.state of a task another node runs
UNPLACED_RETRY_SECONDS = 1.0   # between heartbeat retries of the tasks that fit nowhere


class Router:
    def __init__(self, loop, node_id, gcs, peers, objects, ready, resources, dependencies, actors,
                 scheduler, pull, record_object):
        self._loop = loop
        self._node_id = node_id
        self._gcs = gcs
        self._peers = peers
        self._objects = objects
        self._ready = ready
        self._resources = resources
        self._dependencies = dependencies
        self._actors = actors
        self._scheduler = scheduler
        self._pull = pull                   # ObjectManager.want: pull an object here
        self._record_object = record_object  # TaskResults.record_object: GCS "objects" row
        self._forwarded = {}         # task id -> Task run by another node (or being placed)
        self._sent_to = {}           # task id -> node id, of the forwarded tasks sent on
        self._actor_locations = {}   # actor id -> node id
        self._to_place = []
        self._actor_backlog = {}     # actor id -> [Task] waiting for the actor's location
        self._unplaced = []          # tasks no live node can run; retried when nodes join
        self._unplaced_retried = 0.0
        self._warned = set()         # ids of unplaced tasks the driver was warned about
        self._place_scheduled = False
        peers.on_forward_failed = self._forward_failed

    def is_forwarded(self, task_id):
        """Whether another node runs the task for us (its results are pushed here)."""
        return task_id in self._forwarded

    # --------------------------------------------------------------- route

    def route(self, task):
        """Take the task elsewhere if it should not run here; True when taken."""
        if not self._peers.has_peers():
            return False
        spec = task.spec
        if spec.task_type == codec.ACTOR_TASK:
            if self._actors.hosts(spec.actor_id):
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
        if spec.strategy == codec.STRATEGY_SPREAD:
            return True
        if spec.strategy == codec.STRATEGY_NODE_AFFINITY:
            return spec.strategy_node_id != self._node_id
        request = self._ready.request_for(task)
        resources = self._resources
        if not resources.feasible(request):
            return True
        cpus = from_fixed(resources.total.get("CPU", 0))
        if len(self._ready) >= QUEUE_PER_CPU * max(1.0, cpus):
            return True
        remote_bytes = 0
        objects = self._objects
        for object_id in task.deps:
            entry = objects.get(object_id)
            if entry is not None and entry.state != READY and entry.remote_locations:
                remote_bytes += entry.size
        return remote_bytes > LOCALITY_BYTES

    def _hold(self, task):
        """Keep the task's inputs alive here and make its results known here."""
        self._dependencies.hold_inputs(task)
        objects = self._objects
        for object_id in task.spec.return_ids():
            objects.entry(object_id)
        task.state = FORWARDED
        self._forwarded[task.spec.task_id] = task

    def adopt(self, task):
        """Place a task this node already holds the inputs of (it was infeasible here)."""
        task.state = FORWARDED
        self._forwarded[task.spec.task_id] = task
        self.place(task)

    def adopt_call(self, task):
        """Forward an actor call this node already holds the inputs of."""
        task.state = FORWARDED
        self._forwarded[task.spec.task_id] = task
        self._send_actor_call(task)

    # -------------------------------------------------------- global placing

    def place(self, task):
        self._to_place.append(task)
        if not self._place_scheduled:
            self._place_scheduled = True
            self._loop.call_soon(lambda: self._loop.create_task(self._place_batch()))

    async def _place_batch(self):
        self._place_scheduled = False
        batch, self._to_place = self._to_place, []
        if not batch:
            return
        stub = self._peers.scheduler_stub()
        placements = None
        if stub is not None:
            try:
                reply = await stub.Schedule(
                    rayx_pb2.ScheduleRequest(specs=[task.spec.encode() for task in batch],
                                             from_node_id=self._node_id),
                    metadata=self._peers.metadata, timeout=30)
                placements = list(reply.placements)
            except grpc.aio.AioRpcError as exc:
                logger.warning("the global scheduler failed (%s); keeping %d task(s) local",
                               exc.code(), len(batch))
        for i, task in enumerate(batch):
            placement = placements[i] if placements else None
            if placement is None:
                self.run_here(task)
            elif placement.infeasible:
                self._unplaced.append(task)
                if task.spec.task_id not in self._warned:
                    self._warned.add(task.spec.task_id)
                    self._scheduler.warn_infeasible(task)
            elif bytes(placement.node_id) == self._node_id:
                self.run_here(task)
            else:
                self.forward(task, bytes(placement.node_id))

    def run_here(self, task):
        self._forwarded.pop(task.spec.task_id, None)
        self._sent_to.pop(task.spec.task_id, None)
        self._warned.discard(task.spec.task_id)
        task.state = t.WAITING
        self._scheduler.submit_here(task, inputs_held=True)

    def forward(self, task, node_id):
        spec = task.spec
        self._warned.discard(spec.task_id)
        if spec.task_type == codec.ACTOR_CREATION_TASK and not self._peers.is_dead(node_id):
            # (Placed on a node found dead meanwhile: the send fails and it is placed again.)
            self._actor_locations[spec.actor_id] = node_id
            self._flush_backlog(spec.actor_id)
        self._send(task, node_id)

    def _send(self, task, node_id):
        self._sent_to[task.spec.task_id] = node_id
        self._peers.forward(node_id, task.spec.encode())

    def _forward_failed(self, node_id, specs):
        """Tasks that never reached ``node_id`` (it is dead, or every attempt failed):
        placed again; actor calls go to wherever the actor is now."""
        for blob in specs:
            spec = codec.loads(blob)
            task = self._forwarded.get(spec.task_id)
            if task is None or self._sent_to.get(spec.task_id) != node_id:
                continue
            del self._sent_to[spec.task_id]
            if spec.task_type == codec.ACTOR_TASK:
                if self._actor_locations.get(spec.actor_id) == node_id:
                    del self._actor_locations[spec.actor_id]
                self._send_actor_call(task)
            else:
                self.place(task)

    def lost_to(self, node_id):
        """``node_id`` died: forget where actors were there, and return the tasks we
        forwarded to it that have not finished (they are no longer forwarded). Actor
        creations among them are left to the monitor, which restarts the actor."""
        for actor_id, where in list(self._actor_locations.items()):
            if where == node_id:
                del self._actor_locations[actor_id]
        lost = []
        for task_id, where in list(self._sent_to.items()):
            if where != node_id:
                continue
            del self._sent_to[task_id]
            task = self._forwarded.pop(task_id, None)
            if task is None:
                continue
            if task.spec.task_type == codec.ACTOR_CREATION_TASK:
                self._dependencies.release_inputs(task)
            else:
                lost.append(task)
        return lost

    def resubmit(self, task):
        """Send a task lost with its node on again (its retry is taken)."""
        self._forwarded[task.spec.task_id] = task
        if task.spec.task_type == codec.ACTOR_TASK:
            self._send_actor_call(task)
        else:
            self.place(task)

    def retry_unplaced(self):
        """Nodes joined or left: try again to place what fit nowhere."""
        tasks, self._unplaced = self._unplaced, []
        for task in tasks:
            self.place(task)

    def on_heartbeat(self):
        """Retry what fit nowhere, at most every ``UNPLACED_RETRY_SECONDS``."""
        if self._unplaced and self._loop.time() - self._unplaced_retried > UNPLACED_RETRY_SECONDS:
            self._unplaced_retried = self._loop.time()
            self.retry_unplaced()

    # ----------------------------------------------------------- actor calls

    def _send_actor_call(self, task):
        actor_id = task.spec.actor_id
        node_id = self._actor_locations.get(actor_id)
        if node_id is not None and actor_id not in self._actor_backlog:
            self._send(task, node_id)
            return
        backlog = self._actor_backlog.get(actor_id)
        if backlog is None:
            backlog = self._actor_backlog[actor_id] = []
            self._loop.create_task(self._locate_actor(actor_id))
        backlog.append(task)

    async def _locate_actor(self, actor_id, timeout=60.0):
        loop = self._loop
        delay = 0.005
        deadline = loop.time() + timeout
        death = None
        while actor_id not in self._actor_locations and loop.time() < deadline:
            if self._actors.hosts(actor_id):
                break
            record = await loop.run_in_executor(None, tables.ACTORS.get, self._gcs, actor_id)
            if record and record.get("state") == tables.ACTOR_DEAD:
                death = record
                break
            if record and record.get("state") != tables.ACTOR_RESTARTING \
                    and not self._peers.is_dead(record["node_id"]):
                self._actor_locations[actor_id] = record["node_id"]
                break
            await asyncio.sleep(delay)      # being created, or restarting after its node died
            delay = min(delay * 2, 0.2)
        self._flush_backlog(actor_id, death)

    def _flush_backlog(self, actor_id, death=None):
        backlog = self._actor_backlog.pop(actor_id, None)
        if not backlog:
            return
        node_id = self._actor_locations.get(actor_id)
        for task in backlog:
            if death is not None:
                self._forwarded.pop(task.spec.task_id, None)
                self._actors.reject_dead(task, death.get("class_name", "?"), death.get("death_reason", ""))
            elif node_id is None:
                # Here after all, or nowhere (then the call fails with ActorDiedError).
                self._forwarded.pop(task.spec.task_id, None)
                self._dependencies.release_inputs(task)
                self._actors.submit_call(task)
            else:
                self._send(task, node_id)

    def kill_actor(self, actor_id, no_restart):
        """rayx.kill, wherever the actor lives."""
        if self._actors.hosts(actor_id) or not self._peers.has_peers():
            return self._actors.kill(actor_id, no_restart)
        node_id = self._actor_locations.get(actor_id)
        if node_id is None:
            record = tables.ACTORS.get(self._gcs, actor_id)
            if record is None:
                raise ValueError(f"no actor {actor_id.hex()} in the cluster")
            node_id = record["node_id"]
        stub = self._peers.node_stub(node_id)
        if stub is None:
            raise ValueError(f"the node of actor {actor_id.hex()} is not alive")
        request = rayx_pb2.KillActorRequest(actor_id=actor_id, no_restart=no_restart)

        async def kill():
            try:
                await stub.KillActor(request, metadata=self._peers.metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                logger.warning("KillActor to node %s failed (%s)", node_id.hex()[:12], exc.code())

        self._loop.create_task(kill())
        return True

    # ------------------------------------------------------------- results

    def results_pushed(self, from_node, ready_objects):
        """ObjectsReady: results of tasks we forwarded, pushed by the node that ran them
        (which keeps its copies until we free them); we keep what it borrowed of their
        inputs for it, and stop holding the inputs."""
        objects = self._objects
        done_tasks = set()
        for obj in ready_objects:
            object_id = bytes(obj.object_id)
            nested = [bytes(inner) for inner in obj.nested_refs]
            entry = objects.entry(object_id)
            entry.add_owner_pin(from_node)
            for inner in nested:
                objects.entry(inner).add_owner_pin(from_node)
            for borrowed in obj.borrowed_refs:
                objects.keep_for(from_node, bytes(borrowed))    # before the task's inputs go
            if obj.inline:
                objects.mark_ready(object_id, bytes(obj.data), obj.size, nested, obj.is_error)
            else:
                entry.size = obj.size
                entry.remote_locations.add(from_node)
                # Where it is, in the GCS from here too: the node that made it may die
                # before its own (batched) row is written, and then a reader elsewhere
                # learns from this row that the object is lost, not still being made.
                self._record_object(object_id, obj.size, from_node)
                if entry.waiters:
                    for waiter in list(entry.waiters):
                        if isinstance(waiter, WaitRequest) and not waiter.fetch:
                            entry.waiters.remove(waiter)   # it only asked whether the object exists
                            waiter.object_ready(entry)
                    if entry.waiters:
                        self._pull(object_id)
            done_tasks.add(object_id[:16])
        for task_id in done_tasks:
            self._sent_to.pop(task_id, None)
            task = self._forwarded.pop(task_id, None)
            if task is not None:
                self._dependencies.release_inputs(task)
