"""The raylet: one node's local scheduler, object table and worker pool, on one
asyncio event loop. This module builds its parts and connects them, starts and
stops the node, and sends its heartbeat.

Drivers and workers connect to its Unix socket (``rayx.raylet.clients``) and
exchange the messages of ``rayx.messages``. A task submitted here goes through
the local scheduler (``local_scheduler``: keep it, or let the ``router`` take
it to another node), waits for its inputs (``dependencies``; the
``object_manager`` pulls remote ones), is dispatched to a worker
(``dispatch``, ``worker_pool``, ``resources``), and finishes (``completion``):
its results go into the node's object table (``objects``; ``spill`` when the
arena is full), which answers gets and waits (``waits``). Actors
(``actors``) and worker leases (``leases``) have parts of their own, and so
have deaths (``failures``). Lineage (every task spec), object locations and
the node's heartbeat go to the GCS (``rayx.gcs.tables``) through a batched
writer, never one round trip per task; other nodes talk to this one over gRPC
(``grpc_server``, ``peers``).
"""
import asyncio
import logging
import os
import signal
import time

from rayx.gcs import tables
from rayx.monitor.nodes import DEFAULT_TIMEOUT_S, NodeMonitor
from rayx.monitor.recovery import Recovery
from rayx.raylet.actors import ActorManager
from rayx.raylet.clients import ClientHandlers, Drivers
from rayx.raylet.completion import Completion, TaskResults
from rayx.raylet.dependencies import Dependencies
from rayx.raylet.dispatch import Dispatcher
from rayx.raylet.failures import Failures
from rayx.raylet.grpc_server import NodeService, start_server
from rayx.raylet.leases import Leases
from rayx.raylet.local_scheduler import LocalScheduler
from rayx.raylet.object_manager import ObjectManager
from rayx.raylet.objects import ObjectTable
from rayx.raylet.peers import CHANNEL_OPTIONS, Peers
from rayx.raylet.reconstruction import Reconstruction
from rayx.raylet.resources import NodeResources
from rayx.raylet.router import Router
from rayx.raylet.spill import Spiller
from rayx.raylet.tasks import ReadyQueues, TaskTable
from rayx.raylet.waits import Waits
from rayx.raylet.worker_pool import WorkerPool

logger = logging.getLogger("rayx.raylet")

HEARTBEAT_INTERVAL = 0.1


class Raylet:
    def __init__(self, loop, *, node_id, session_dir, socket_path, arena, gcs, resources,
                 min_workers, node_info, token="", node_timeout_s=DEFAULT_TIMEOUT_S):
        self.loop = loop
        self.node_id = node_id
        self.session_dir = session_dir
        self.socket_path = socket_path
        self.arena = arena
        self.gcs = gcs
        self.gcs_writer = writer = gcs.batch_writer() if gcs is not None else None
        self.node_info = node_info
        self.token = token
        self._server = None
        self._grpc_server = None
        self._subscription = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._node_timeout_s = node_timeout_s
        self.monitor = None            # the head's node monitor
        self._recovery = None          # what the head does for the cluster when a node dies

        # The node's state, each piece with its one owner.
        self.resources = NodeResources(resources)
        self.pool = WorkerPool(loop, socket_path, session_dir, min_workers, self._worker_output)
        self.peers = Peers(loop, node_id, token, gcs, self._nodes_changed, self._node_dead, self._declared_dead)
        self.objects = ObjectTable(arena, on_free=self._object_freed)
        self.spiller = Spiller(arena, self.objects, os.path.join(session_dir, "spill", node_id.hex()[:12]))
        self.tasks = TaskTable()
        self.ready = ReadyQueues()
        self.drivers = Drivers()

        # Its parts, each given the parts it uses, built before it...
        self.object_manager = ObjectManager(loop, node_id, arena, self.objects, self.peers, self.spiller,
                                            gcs, writer)
        self.dependencies = Dependencies(self.objects, self.spiller, self.tasks, self.object_manager.want,
                                         self.peers.has_peers, lambda: bool(self.peers.dead))
        self.results = TaskResults(node_id, self.tasks, self.objects, self.peers,
                                   self.dependencies.release_inputs, writer)
        self.actors = ActorManager(loop, node_id, gcs, writer, self.resources, self.dependencies,
                                   self.results)
        self.dispatcher = Dispatcher(loop, self.ready, self.resources, self.pool,
                                     self.dependencies.argument_values, self.actors.placed)
        self.scheduler = LocalScheduler(loop, node_id, self.tasks, self.ready, self.resources, self.dependencies,
                                        self.dispatcher.schedule, self.actors, self.results, self.peers,
                                        self.drivers, writer)
        self.router = Router(loop, node_id, gcs, self.peers, self.objects, self.ready, self.resources,
                             self.dependencies, self.actors, self.scheduler, self.object_manager.want,
                             self.results.record_object)
        self.leases = Leases(self.resources, self.pool, self.ready, self.peers.has_peers,
                             self.dispatcher.schedule)
        self.waits = Waits(self.objects, self.resources, self.spiller, self.dependencies.want_object,
                           self.dispatcher.schedule)
        self.completion = Completion(loop, self.dispatcher, self.results, self.actors, self.resources,
                                     self.pool)
        self.failures = Failures(node_id, self.tasks, self.pool, self.resources, self.dispatcher,
                                 self.leases, self.actors, self.results, self.drivers, arena, writer,
                                 self.router, self.objects, self.peers)
        self.reconstruction = Reconstruction(loop, node_id, gcs, self.peers, self.scheduler.submit) \
            if gcs is not None else None
        self.clients = ClientHandlers(loop, self._welcome, self.objects, self.pool, self.drivers, self.peers,
                                      self.scheduler, self.results, self.waits, self.completion,
                                      self.dispatcher, self.leases, self.actors, self.router, self.spiller,
                                      self.status, self.failures)
        # ...and, where two parts use each other, the earlier one learns of the later.
        self.dependencies.connect(is_forwarded=self.router.is_forwarded)
        self.actors.connect(submit=self.scheduler.submit, cancel_queued=self.scheduler.cancel_queued,
                            worker_killed=self.failures.worker_killed)
        self.scheduler.connect(router=self.router)
        self.object_manager.connect(reconstruction=self.reconstruction)

    # ------------------------------------------------------------------ life

    async def start(self):
        self._server = await self.loop.create_unix_server(self.clients.connection, self.socket_path)
        os.chmod(self.socket_path, 0o600)
        self.pool.keep_minimum()
        node_service = NodeService(self.node_id, self._stopped, self.scheduler.accept_forwarded, self.object_manager.serve_pull,
                                   self.router.results_pushed, self.object_manager.release_owner_pins,
                                   self.actors.kill)
        self._grpc_server, address = await start_server(
            node_service, self.gcs, self.node_info["node_ip_address"], self.token,
            with_scheduler=self.node_info.get("is_head"))
        self.node_info["grpc_address"] = address
        if self.gcs is not None:
            tables.NODES.put(self.gcs, self.node_id, self.node_record())
            self._subscription = self.gcs.subscribe(
                [tables.JOB_FINISHED_CHANNEL], lambda channel, data: self.loop.call_soon_threadsafe(
                    self.actors.job_finished, bytes(data)))
            if self.node_info.get("is_head"):
                self._recovery = Recovery(self.gcs, lambda spec: self.loop.call_soon_threadsafe(
                    self.scheduler.submit, spec))
                self.monitor = NodeMonitor(self.loop, self.node_id, self.gcs, self.peers.metadata,
                                           CHANNEL_OPTIONS, self._node_timeout_s, on_dead=self._recover_node)
                self.monitor.start()
        self.loop.create_task(self._heartbeat_loop())

    def stop(self):
        if self._stopping:
            return
        self._stopping = True
        self._stopped.set()
        self.object_manager.stopping = True
        if self.monitor is not None:
            self.monitor.stop()
        if self._server is not None:
            self._server.close()
        self.pool.kill_all()
        self.spiller.remove_all()
        if self._subscription is not None:
            self._subscription.close()
        if self.gcs_writer is not None:
            record = self.node_record()
            record["state"] = tables.NODE_DEAD
            tables.NODES.put(self.gcs_writer, self.node_id, record)
            try:
                self.gcs_writer.close()
            except Exception:
                pass

    # ------------------------------------------------------------- heartbeat

    def node_record(self):
        """This node's row of the GCS ``nodes`` table."""
        record = dict(self.node_info)
        waiting, running = self.tasks.counts()
        resources = self.resources
        record.update({
            "node_id": self.node_id,
            "state": tables.NODE_ALIVE,
            "resources_total": resources.as_floats(resources.total),
            "resources_available": resources.as_floats(resources.available),
            "pending_tasks": len(self.ready) + waiting,
            "running_tasks": running,
            "leased_workers": len(self.leases),
            "infeasible": self.scheduler.infeasible_requests(),
            "workers": len(self.pool.workers),
            "objects": len(self.objects),
            "heartbeat": time.time(),
            "avg_task_seconds": self.dispatcher.node_task_seconds,
            "object_pulls": self.object_manager.pulls,
            "bytes_pulled": self.object_manager.bytes_pulled,
        })
        return record

    def status(self):
        """REQUEST "status": the node record with the object table's and arena's figures."""
        info = self.node_record()
        info["objects_detail"] = self.objects.stats()
        info["arena"] = self.arena.stats()
        info["spilled_bytes"] = self.spiller.spilled_bytes
        info["restored_bytes"] = self.spiller.restored_bytes
        return info

    async def _heartbeat_loop(self):
        while not self._stopping:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            for worker in self.pool.reap_exited():
                self.failures.worker_gone(worker, "exited before registering")
            self.router.on_heartbeat()
            self.pool.keep_minimum()
            if self.gcs_writer is not None:
                tables.NODES.put(self.gcs_writer, self.node_id, self.node_record())
                await self.peers.refresh()

    # ---------------------------------------------------- events between parts

    def _welcome(self):
        """The REGISTERED info a client gets."""
        info = {"node_id": self.node_id, "arena_path": self.arena.path, "session_dir": self.session_dir}
        info.update(self.node_info)
        return info

    def _nodes_changed(self):
        """Nodes joined or left: what fit nowhere may fit now."""
        self.router.retry_unplaced()
        if self.peers.has_peers():
            self.scheduler.move_infeasible_to_router()

    async def _recover_node(self, node_id, record):
        """The monitor found ``node_id`` dead (and marked it so): this node's own side
        first (what it sent there comes back, so that the actors restarted next are
        not taken for lost with it), then the cluster's (``Recovery``)."""
        await self.peers.refresh()
        await self.loop.run_in_executor(None, self._recovery.node_died, node_id, record)

    def _node_dead(self, node_id):
        if not self._stopping:
            self.failures.node_died(node_id)

    def _declared_dead(self):
        """The GCS says this node is dead (it was silent too long): stop, as a dead
        node never comes back; its work is being redone elsewhere."""
        if not self._stopping:
            logger.error("the monitor declared this node dead; stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    def _object_freed(self, entry):
        if entry.spilled:
            self.spiller.forget(entry)
        for node_id in entry.owner_pins or ():
            self.peers.free(node_id, entry.object_id)

    def _worker_output(self, worker, stream, text):
        self.drivers.log(worker.job_id, stream, text)
