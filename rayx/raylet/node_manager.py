"""The raylet: one node's local scheduler, object table and worker pool, on one
asyncio event loop.

Drivers and workers connect to its Unix socket and exchange framed messages
(``rayx.protocol``). The raylet keeps tasks until their inputs are ready,
runs them on idle workers when the node's resources allow, records results
(small ones inline, large ones already sealed in the arena by the worker),
answers ``get``/``wait`` requests, counts references and frees objects, and
retries or fails the tasks of workers that die. Lineage (every task spec and
its final state), object records and the node's heartbeat go to the GCS
through a batched writer, never one round trip per task.
"""
import asyncio
import itertools
import logging
import os
import time

from rayx import messages
from rayx import protocol as p
from rayx import serialization
from rayx._core import codec
from rayx.exceptions import ACTOR_CALL_FORCE_CANCEL, TaskCancelledError, WorkerCrashedError
from rayx.protos import rayx_pb2
from rayx.raylet import tasks as t
from rayx.raylet.actors import ActorManager
from rayx.raylet.leases import Leases
from rayx.raylet.object_manager import ObjectManager
from rayx.raylet.peers import Peers
from rayx.raylet.router import Router
from rayx.raylet.spill import Spiller
from rayx.raylet import worker_pool as wp
from rayx.raylet.objects import ObjectTable, READY
from rayx.raylet.resources import NodeResources

logger = logging.getLogger("rayx.raylet")

HEARTBEAT_INTERVAL = 0.1
MAX_STARTING_WORKERS = 4
PIPELINE_DEPTH = 4        # tasks in flight per worker when every CPU is busy
PIPELINE_MAX_SECONDS = 0.002   # only functions measured to run shorter than this are pipelined


class ClientConnection(asyncio.Protocol):
    """One driver or worker connected to the raylet."""

    def __init__(self, raylet):
        self.raylet = raylet
        self.transport = None
        self.reader = codec.FrameReader()
        self.out = []
        self.kind = None
        self.worker = None
        self.job_id = b""
        self.pid = 0
        self.held = set()
        self.waits = {}
        self.notifiers = set()   # answered waits still sending READY_NOTEs
        self.info = {}

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            messages = self.reader.feed(data)
        except Exception as exc:
            logger.error("closing a connection that sent a malformed frame: %s", exc)
            self.transport.close()
            return
        handle = self.raylet.handle
        for message in messages:
            try:
                handle(self, message)
            except Exception:
                logger.exception("error handling message %r", message[:1])

    def connection_lost(self, exc):
        self.raylet.on_disconnect(self)

    def send(self, message):
        out = self.out
        out.append(message)
        if len(out) == 1:
            self.raylet.loop.call_soon(self._flush)

    def _flush(self):
        out = self.out
        if out and not self.transport.is_closing():
            self.transport.write(codec.pack_frames(out))
        self.out = []


class WaitRequest:
    """A get or wait from a client: answered once ``num_ready`` objects are ready."""

    __slots__ = ("raylet", "conn", "request_id", "object_ids", "num_ready", "with_data", "ready", "done",
                 "fetch", "notify", "notes_left")

    def __init__(self, raylet, conn, request_id, object_ids, num_ready, with_data):
        self.raylet = raylet
        self.conn = conn
        self.request_id = request_id
        self.object_ids = object_ids
        self.num_ready = num_ready
        self.with_data = with_data
        self.ready = 0
        self.done = False
        self.fetch = True
        self.notify = False
        self.notes_left = 0

    def object_ready(self, entry):
        if self.done:
            # Answered already; the client asked to hear about the rest (a later
            # wait on them then needs no round trip).
            self.conn.send((p.READY_NOTE, entry.object_id))
            self.notes_left -= 1
            if self.notes_left <= 0:
                self.conn.notifiers.discard(self)
            return
        self.ready += 1
        if self.ready >= self.num_ready and not self.done:
            self.raylet.complete_wait(self)


class Raylet:
    def __init__(self, loop, *, node_id, session_dir, socket_path, arena, gcs, resources,
                 min_workers, node_info, token=""):
        self.loop = loop
        self.node_id = node_id
        self.session_dir = session_dir
        self.socket_path = socket_path
        self.arena = arena
        self.gcs = gcs
        self.gcs_writer = gcs.batch_writer() if gcs is not None else None
        self.resources = NodeResources(resources)
        self.objects = ObjectTable(arena, on_free=self._on_object_freed)
        self.pool = wp.WorkerPool(loop, socket_path, session_dir, node_id, self._on_worker_output)
        self.min_workers = min_workers
        self.node_info = node_info
        self.ready = t.ReadyQueues()
        self.tasks = {}               # task id -> Task, until finished
        self.infeasible = []
        self.drivers = set()
        self._dispatch_scheduled = False
        self._server = None
        self._stopping = False
        self._finished_tasks = 0
        self.actors = ActorManager(self)
        self.leases = Leases(self)
        self.token = token
        self.peers = Peers(loop, node_id, token)
        self.router = Router(self, self.peers)
        self.peers.refresh = self._refresh_peers
        self.object_manager = ObjectManager(self)
        self.spiller = Spiller(arena, os.path.join(session_dir, "spill", node_id.hex()[:12]))
        self._grpc_server = None
        self._task_seconds = 0.0
        self._durations = {}           # function id -> average seconds per run
        self._unplaced_retry = 0.0
        self._subscription = None
        self._handlers = messages.handlers({
            messages.REGISTER: self._on_register,
            messages.SUBMIT: self._on_submit,
            messages.PUT: self._on_put,
            messages.WAIT: self._on_wait,
            messages.CANCEL_WAIT: self._on_cancel_wait,
            messages.TASK_DONE: self._on_task_done,
            messages.REFS: self._on_refs,
            messages.REQUEST: self._on_request,
            messages.ACTOR_EXIT: self._on_actor_exit,
            messages.GIVE_BACK: self._on_give_back,
            messages.LISTENING: self._on_listening,
            messages.NOW_RUNNING: self._on_now_running,
            messages.RETURN_LEASES: self._on_return_leases,
        }, leading=("conn",))

    # ------------------------------------------------------------------ life

    async def start(self):
        self._server = await self.loop.create_unix_server(lambda: ClientConnection(self), self.socket_path)
        os.chmod(self.socket_path, 0o600)
        for _ in range(self.min_workers):
            self.pool.start_worker()
        from rayx.raylet.grpc_server import start_server
        self._grpc_server, address = await start_server(
            self, self.node_info["node_ip_address"], self.token, with_scheduler=self.node_info.get("is_head"))
        self.node_info["grpc_address"] = address
        self._register_node()
        if self.gcs is not None:
            self._subscription = self.gcs.subscribe(
                ["job_finished"], lambda channel, data: self.loop.call_soon_threadsafe(
                    self.actors.job_finished, bytes(data)))
        self.loop.create_task(self._heartbeat_loop())

    def stop(self):
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        self.pool.kill_all()
        for worker in self.pool.workers.values():
            _unlink_socket(worker)
        self.spiller.remove_all()
        if self._subscription is not None:
            self._subscription.close()
        if self.gcs_writer is not None:
            info = self._node_record()
            info["state"] = "DEAD"
            self.gcs_writer.put("nodes", self.node_id, codec.dumps(info))
            try:
                self.gcs_writer.close()
            except Exception:
                pass

    def _register_node(self):
        if self.gcs is not None:
            self.gcs.put("nodes", self.node_id, codec.dumps(self._node_record()))

    def _node_record(self):
        info = dict(self.node_info)
        info.update({
            "node_id": self.node_id,
            "state": "ALIVE",
            "resources_total": self.resources.as_floats(self.resources.total),
            "resources_available": self.resources.as_floats(self.resources.available),
            "pending_tasks": len(self.ready) + sum(1 for x in self.tasks.values() if x.state == t.WAITING),
            "running_tasks": sum(1 for x in self.tasks.values() if x.state == t.RUNNING),
            "leased_workers": len(self.leases),
            "infeasible": [dict(x.spec.resources) for x in self.infeasible],
            "workers": len(self.pool.workers),
            "objects": len(self.objects),
            "heartbeat": time.time(),
            "avg_task_seconds": self._task_seconds,
            "object_pulls": self.object_manager.pulls,
            "bytes_pulled": self.object_manager.bytes_pulled,
        })
        return info

    async def _heartbeat_loop(self):
        while not self._stopping:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            for worker in self.pool.reap_exited():
                self._worker_gone(worker, "exited before registering")
            if self.router.unplaced and self.loop.time() - self._unplaced_retry > 1.0:
                self._unplaced_retry = self.loop.time()
                self.router.retry_unplaced()
            self._ensure_min_workers()
            if self.gcs_writer is not None:
                self.gcs_writer.put("nodes", self.node_id, codec.dumps(self._node_record()))
                await self._refresh_peers()

    async def _refresh_peers(self):
        try:
            rows = await self.loop.run_in_executor(None, self.gcs.scan, "nodes")
        except Exception:
            logger.exception("reading the node table")
            return
        if self.peers.update([codec.loads(blob) for blob in rows.values()]):
            # Nodes joined or left: what fit nowhere may fit now.
            self.router.retry_unplaced()
            if self.peers.has_peers():
                local, self.infeasible = self.infeasible, []
                for task in local:
                    self._move_to_router(task)

    def _move_to_router(self, task):
        """A task that fit nowhere here goes up to the global scheduler (with, for an
        actor creation, the calls already queued for that actor)."""
        spec = task.spec
        self.tasks.pop(spec.task_id, None)
        calls = []
        if spec.task_type == codec.ACTOR_CREATION_TASK:
            actor = self.actors.actors.pop(spec.actor_id, None)
            if actor is not None:
                self.actors.answer_probes(actor, moved=True)
                for caller in actor.callers.values():
                    calls.extend(caller.all_tasks())
        self.router.adopt(task)
        for call in sorted(calls, key=lambda c: c.spec.sequence_number):
            self.forget_dependencies(call)
            self.tasks.pop(call.spec.task_id, None)
            self.router.adopt_call(call)

    # -------------------------------------------------------------- messages

    def handle(self, conn, message):
        self._handlers[message[0]](conn, *message[1:])

    def _on_register(self, conn, kind, worker_id, pid, job_id, info):
        conn.kind = kind
        conn.pid = pid
        conn.job_id = job_id
        conn.info = info
        reply = {"node_id": self.node_id, "arena_path": self.arena.path,
                 "session_dir": self.session_dir}
        reply.update(self.node_info)
        if kind == "driver":
            self.drivers.add(conn)
            self.loop.create_task(self._refresh_peers())
        else:
            worker = self.pool.registered(worker_id, conn)
            if worker is None:
                conn.transport.close()
                return
            conn.worker = worker
            self.pool.push_idle(worker)
        conn.send((p.REGISTERED, reply))
        if kind != "driver":
            self._schedule_dispatch()

    def _on_submit(self, conn, spec):
        # The submitter holds refs to the returns from now on (it sends no REFS for them).
        held = conn.held
        objects = self.objects
        for object_id in spec.return_ids():
            if object_id not in held:
                held.add(object_id)
                objects.incref(object_id)
        self.submit(spec, conn)

    def _on_put(self, conn, object_id, data, size, nested_refs, is_error=False, held=True):
        if held and object_id not in conn.held:
            # The putter holds it from now on (it sends no REFS for it), so its
            # drop, however soon, frees the object.
            conn.held.add(object_id)
            self.objects.incref(object_id)
        self.objects.mark_ready(object_id, data, size, nested_refs, is_error)
        self._record_object(object_id, size)

    def _on_listening(self, conn, path):
        if conn.worker is not None:
            conn.worker.direct_path = path

    def _on_now_running(self, conn, name):
        if conn.worker is not None:
            conn.worker.display_name = name

    def _op_lease(self, conn, resources):
        return self.leases.grant(conn, resources)

    def _on_return_leases(self, conn, worker_ids):
        self.leases.give_back(conn, worker_ids)

    def _on_refs(self, conn, added, removed):
        held = conn.held
        objects = self.objects
        for object_id in added:
            if object_id not in held:
                held.add(object_id)
                objects.incref(object_id)
        for object_id in removed:
            if object_id in held:
                held.discard(object_id)
                objects.decref(object_id)

    def _on_request(self, conn, request_id, op, args):
        try:
            if op == "actor_direct":    # answered by the actor manager, maybe later
                self.actors.direct_probe(conn, request_id, *args)
                return
            result = getattr(self, "_op_" + op)(conn, *args)
            conn.send((p.REPLY, request_id, True, result))
        except Exception as exc:
            conn.send((p.REPLY, request_id, False, f"{type(exc).__name__}: {exc}"))

    def _op_cancel(self, conn, task_id, force):
        """rayx.cancel: drop the task if it has not started; interrupt it (or, with
        ``force``, kill its worker) if it runs. Returns whether it was found here."""
        task = self.tasks.get(task_id)
        if task is None:
            return False
        if task.spec.task_type == codec.ACTOR_TASK:
            if force:
                return ACTOR_CALL_FORCE_CANCEL      # the caller raises ValueError with it
            self.actors.cancel_call(task)
            return True
        if task.spec.task_type != codec.NORMAL_TASK:
            raise ValueError("only tasks can be cancelled; use rayx.kill() for actors")
        if task.state in (t.WAITING, t.READY, t.INFEASIBLE):
            self.cancel_queued(task)
            self.fail_task(task, TaskCancelledError.before_it_ran(task.spec))
            return True
        worker = task.worker
        task.cancelled = True
        if force and worker is not None and worker.task is task:
            worker.process.kill()
        elif worker is not None:
            worker.conn.send((p.CANCEL, task_id))
        return True

    def _op_make_room(self, conn, nbytes):
        """A client could not fit ``nbytes``: its dropped refs were handled before this
        request, so what nobody refers to is already freed; if that is not enough,
        referenced objects are spilled to disk. Returns the largest free block."""
        if self.arena.stats()["largest_free_block"] < nbytes:
            self.spiller.make_room(self.objects, nbytes)
        return self.arena.stats()["largest_free_block"]

    def ensure_in_arena(self, entry):
        """Restore a spilled object before anyone is told to read it from the arena."""
        if entry.spilled:
            self.spiller.restore(self.objects, entry)

    def _op_status(self, conn):
        info = self._node_record()
        info["objects_detail"] = self.objects.stats()
        info["arena"] = self.arena.stats()
        info["spilled_bytes"] = self.spiller.spilled_bytes
        info["restored_bytes"] = self.spiller.restored_bytes
        return info

    # ----------------------------------------------------------- get / wait

    def _on_wait(self, conn, request_id, object_ids, num_ready, with_data, fetch=True, notify=False):
        unique = list(dict.fromkeys(object_ids))
        request = WaitRequest(self, conn, request_id, unique, min(num_ready, len(unique)), with_data)
        request.fetch = fetch
        request.notify = notify and fetch
        objects = self.objects
        pending = []
        for object_id in unique:
            entry = objects.get(object_id)
            if entry is not None and (entry.state == READY or (not fetch and entry.remote_locations)):
                request.ready += 1
            else:
                pending.append(object_id)
        if request.ready >= request.num_ready:
            self.complete_wait(request)
            return
        for object_id in pending:
            entry = objects.add_waiter(object_id, request)
            if fetch:
                self.want_object(entry)
        conn.waits[request_id] = request
        worker = conn.worker
        if worker is not None and worker.allocation is not None and not worker.blocked_cpus:
            # A worker blocked in get gives its CPUs back so nested tasks can run.
            worker.blocked_cpus = self.resources.release_cpu(worker.allocation)
            if worker.blocked_cpus:
                self._schedule_dispatch()

    def complete_wait(self, request):
        request.done = True
        conn = request.conn
        conn.waits.pop(request.request_id, None)
        objects = self.objects
        ready = []
        lingering = False
        for object_id in request.object_ids:
            entry = objects.get(object_id)
            if entry is None or entry.state != READY:
                if request.notify and entry is not None:
                    lingering = True          # stays registered, to send READY_NOTE
                    request.notes_left += 1
                    if entry.waiters is None or request not in entry.waiters:
                        objects.add_waiter(object_id, request)
                else:
                    objects.remove_waiter(object_id, request)
                if entry is not None and not request.fetch and entry.remote_locations:
                    ready.append((object_id, None, True))
                continue
            data = entry.data if request.with_data else None
            if request.with_data and entry.spilled:
                self.ensure_in_arena(entry)
            ready.append((object_id, data, entry.in_arena))
        if lingering:
            conn.notifiers.add(request)
        conn.send((p.WAIT_REPLY, request.request_id, ready))
        self._unblock(conn.worker)

    def _on_cancel_wait(self, conn, request_id):
        request = conn.waits.pop(request_id, None)
        if request is None:
            return
        request.done = True
        for object_id in request.object_ids:
            self.objects.remove_waiter(object_id, request)
        self._unblock(conn.worker)

    def _unblock(self, worker):
        if worker is not None and worker.blocked_cpus and not worker.conn.waits:
            self.resources.reacquire_cpu(worker.blocked_cpus)
            worker.blocked_cpus = 0

    # ------------------------------------------------------------ scheduling

    def submit(self, spec, submitter=None, hold_inputs=True, owner_node=None):
        """A task was created on this node (or forwarded to it by ``owner_node``)."""
        task = t.Task(spec, submitter, self._on_deps_ready)
        task.owner_node = owner_node
        if self.gcs_writer is not None and spec.attempt == 0 and owner_node is None:
            self.gcs_writer.put("tasks", spec.task_id, spec.encode())
        if owner_node is None and hold_inputs and self.router.route(task):
            return
        self.submit_here(task, inputs_held=not hold_inputs)

    def submit_here(self, task, inputs_held=False):
        spec = task.spec
        self.tasks[spec.task_id] = task
        if spec.task_type == codec.ACTOR_TASK:
            self.actors.submit_call(task)
            return
        if spec.task_type == codec.ACTOR_CREATION_TASK:
            self.actors.creation_submitted(task)
        self.track_dependencies(task, not inputs_held)
        if not task.missing:
            self._on_deps_ready(task)

    def accept_forwarded(self, spec, from_node):
        """ForwardTasks: run a task another node placed here; its results go back to that node."""
        if from_node not in self.peers.nodes:
            self.peers.saw_peer()
            self.loop.create_task(self._refresh_peers())
        self.submit(spec, None, owner_node=from_node)

    def track_dependencies(self, task, hold_inputs=True, wait=True):
        """Hold the task's inputs and wait for those that are not ready yet."""
        objects = self.objects
        if hold_inputs:
            for object_id in task.deps:
                objects.incref(object_id)
            for object_id in task.spec.nested_refs:
                objects.incref(object_id)
        if not wait:
            return
        missing = 0
        for object_id in task.deps:
            if not objects.is_ready(object_id):
                self.want_object(objects.add_waiter(object_id, task))
                missing += 1
        task.missing = missing

    def want_object(self, entry):
        """Someone here waits for a non-local object: pull it unless it is being made here."""
        task_id = entry.object_id[:16]
        if entry.remote_locations:
            self.object_manager.want(entry.object_id)
        elif task_id in self.tasks or task_id in self.router.forwarded:
            return                      # made here, or pushed here by the node running it
        elif self.peers.has_peers():
            self.object_manager.want(entry.object_id)

    def forget_dependencies(self, task):
        for object_id in task.deps:
            self.objects.remove_waiter(object_id, task)

    def dependency_error(self, task):
        """Error results for the task if one of its inputs is an error, else None."""
        for object_id in task.deps:
            entry = self.objects.get(object_id)
            if entry is not None and entry.is_error:
                return [(oid, entry.data, entry.size, (), True) for oid in task.spec.return_ids()]
        return None

    def argument_values(self, task):
        """{object id: inline bytes, or None when the object is in the arena} of the task's inputs."""
        objects = self.objects
        values = {}
        for object_id in task.deps:
            entry = objects.get(object_id)
            if entry.spilled:
                self.ensure_in_arena(entry)
            values[object_id] = None if entry.in_arena else entry.data
        return values

    def cancel_queued(self, task):
        """Drop a task that has not started (waiting or queued)."""
        if task.state == t.WAITING:
            self.forget_dependencies(task)
        elif task.state == t.READY:
            self.ready.remove(task)
        elif task.state == t.INFEASIBLE:
            try:
                self.infeasible.remove(task)
            except ValueError:
                pass

    def _on_deps_ready(self, task):
        error = self.dependency_error(task)
        if error is not None:
            # An input is an error: the task fails with it, without running.
            self.finish_task(task, error)
            return
        task.request = self.ready.request_for(task)
        if not self.resources.feasible(task.request):
            task.state = t.INFEASIBLE
            self.infeasible.append(task)
            self.loop.create_task(self._warn_if_still_infeasible(task))
            return
        task.state = t.READY
        self.ready.push(task)
        self._schedule_dispatch()

    async def _warn_if_still_infeasible(self, task):
        # Other nodes may have joined since the last heartbeat: look before warning.
        await self._refresh_peers()
        if task in self.infeasible:
            self.warn_infeasible(task)

    def warn_infeasible(self, task):
        message = (f"Warning: the task {task.spec.function_name} requests {dict(task.spec.resources)}, "
                   f"which no node in the cluster can satisfy (this node has "
                   f"{self.resources.as_floats(self.resources.total)}). It stays pending until a node "
                   f"that fits joins; `rayx status` lists it.")
        conn = task.submitter
        targets = [conn] if conn is not None and conn.kind == "driver" else list(self.drivers)
        for target in targets:
            target.send((p.LOG, 2, message))

    def _schedule_dispatch(self):
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self.loop.call_soon(self._dispatch)

    def _dispatch(self):
        self._dispatch_scheduled = False
        resources = self.resources
        pool = self.pool
        wanted_workers = 0
        for queue in self.ready.queues.values():
            while queue:
                task = queue[0]
                allocation = resources.try_acquire(task.request)
                if allocation is None:
                    break
                worker = pool.pop_idle()
                if worker is None:
                    wanted_workers += self._runnable_now(queue, allocation)
                    break
                queue.popleft()
                self._run(task, worker, allocation)
        if wanted_workers:
            for _ in range(min(wanted_workers, MAX_STARTING_WORKERS) - pool.starting):
                pool.start_worker()
        elif any(self.ready.queues.values()):
            self._pipeline()

    def _pipeline(self):
        """Every CPU is busy: queue more tasks behind running ones of the same shape,
        so a worker goes from one task to the next without a round trip to us."""
        busy = {}
        short = self._is_short
        for worker in self.pool.workers.values():
            task = worker.task
            if (task is not None and worker.state == wp.BUSY and not worker.conn.waits
                    and task.spec.task_type == codec.NORMAL_TASK and short(task)
                    and len(worker.queued) < PIPELINE_DEPTH - 1):
                busy.setdefault(task.shape, []).append(worker)
        for shape, workers in busy.items():
            queue = self.ready.queues.get(shape)
            while queue and workers:
                workers.sort(key=lambda w: len(w.queued))
                worker = workers[0]
                task = queue[0]
                if task.spec.task_type != codec.NORMAL_TASK or not short(task):
                    break     # long or unknown tasks never wait behind others
                queue.popleft()
                task.state = t.RUNNING
                task.worker = worker
                worker.queued.append(task)
                worker.conn.send((p.EXECUTE, task.spec, self.argument_values(task), worker.allocation.gpu_ids()))
                if len(worker.queued) >= PIPELINE_DEPTH - 1:
                    workers.pop(0)

    def _is_short(self, task):
        seconds = self._durations.get(task.spec.function_id)
        return seconds is not None and seconds < PIPELINE_MAX_SECONDS

    def _record_duration(self, task):
        """Running average of each function's run time (for pipelining and heartbeats)."""
        seconds = self.loop.time() - task.started
        function_id = task.spec.function_id
        previous = self._durations.get(function_id)
        self._durations[function_id] = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        self._task_seconds = seconds if not self._task_seconds else 0.95 * self._task_seconds + 0.05 * seconds

    def _on_give_back(self, conn, task_ids):
        """A worker about to block in get returns the queued tasks it has not started."""
        worker = conn.worker
        if worker is None:
            return
        wanted = set(task_ids)
        returned = [task for task in worker.queued if task.spec.task_id in wanted]
        for task in reversed(returned):
            worker.queued.remove(task)
            task.state = t.READY
            task.worker = None
            self.ready.push_front(task)
        if returned:
            self._schedule_dispatch()

    def _runnable_now(self, queue, first_allocation):
        """How many tasks at the head of ``queue`` the free resources could run now
        (``first_allocation`` is already taken for the first); releases everything."""
        taken = [first_allocation]
        for task in itertools.islice(queue, 1, MAX_STARTING_WORKERS):
            allocation = self.resources.try_acquire(task.request)
            if allocation is None:
                break
            taken.append(allocation)
        for allocation in taken:
            self.resources.release(allocation)
        return len(taken)

    def _run(self, task, worker, allocation):
        spec = task.spec
        task.state = t.RUNNING
        task.worker = worker
        worker.state = wp.BUSY
        worker.task = task
        task.started = self.loop.time()
        worker.allocation = allocation
        worker.display_name = spec.function_name.rpartition(".")[2]
        worker.job_id = spec.job_id
        if spec.task_type == codec.ACTOR_CREATION_TASK:
            worker.display_name = spec.actor_class_name()
            worker.actor_id = spec.actor_id
            self.actors.placed(spec.actor_id, worker)
        worker.conn.send((p.EXECUTE, spec, self.argument_values(task), allocation.gpu_ids()))

    def _on_task_done(self, conn, task_id, results, retryable, exiting=False):
        worker = conn.worker
        if worker is None:
            return
        task = worker.task
        if task is None or task.spec.task_id != task_id:
            if worker.actor_id:
                self.actors.call_done(worker, task_id, results, retryable)
            return
        if task.spec.task_type == codec.ACTOR_CREATION_TASK:
            worker.task = None
            self.actors.creation_done(task, worker, results)
            self._schedule_dispatch()
            return
        self._record_duration(task)
        if retryable and task.spec.take_retry():
            self._retry(task)
        else:
            self.finish_task(task, results)
        if exiting:
            # max_calls reached: the worker exits now, which is no crash. Tasks queued
            # behind this one run elsewhere, as if never sent.
            self._requeue_pipelined(worker)
            self.release_worker_resources(worker)
            worker.task = None
            worker.state = wp.EXITING
            self._ensure_min_workers()
        elif worker.queued:
            # The next pipelined task is already with the worker; it keeps the resources.
            worker.task = worker.queued.popleft()
            worker.task.started = self.loop.time()
            worker.display_name = worker.task.spec.function_name.rpartition(".")[2]
        else:
            self.release_worker_resources(worker)
            worker.task = None
            self.pool.push_idle(worker)
        self._schedule_dispatch()

    def release_worker_resources(self, worker):
        if worker.allocation is not None:
            if worker.blocked_cpus:
                self.resources.reacquire_cpu(worker.blocked_cpus)
                worker.blocked_cpus = 0
            self.resources.release(worker.allocation)
            worker.allocation = None

    def _retry(self, task):
        """Run again a task whose spec counted the attempt (``take_retry``)."""
        task.worker = None
        task.state = t.READY
        self.ready.push_front(task)
        self._schedule_dispatch()

    def finish_task(self, task, results):
        spec = task.spec
        self.tasks.pop(spec.task_id, None)
        objects = self.objects
        owner = getattr(task, "owner_node", None)
        for object_id, data, size, nested, is_error in results:
            if owner is not None:
                # Keep our copy (and what it refers to) until the owner frees it.
                objects.incref(object_id)
                for inner in nested:
                    objects.incref(inner)
                self.peers.object_ready(owner, rayx_pb2.ReadyObject(
                    object_id=object_id, inline=data is not None, data=data or b"", size=size,
                    is_error=is_error, nested_refs=list(nested)))
            objects.mark_ready(object_id, data, size, nested, is_error)
            self._record_object(object_id, size)
        if spec.task_type != codec.ACTOR_CREATION_TASK:
            # An actor's constructor arguments stay alive for its restarts.
            self.release_inputs(task)
        self._finished_tasks += 1

    def release_inputs(self, task):
        objects = self.objects
        for object_id in task.deps:
            objects.decref(object_id)
        for object_id in task.spec.nested_refs:
            objects.decref(object_id)

    def _record_object(self, object_id, size, copy=False):
        """Object table: where the object was made (one SET, batched into an MSET),
        and the nodes that pulled a copy (a hash)."""
        if self.gcs_writer is not None:
            if copy:
                self.gcs_writer.hset("object_copies", object_id, self.node_id, str(size))
            else:
                self.gcs_writer.put("objects", object_id, self.node_id + str(size).encode())

    # ------------------------------------------------------ between nodes

    def remote_objects_ready(self, from_node, ready_objects):
        """ObjectsReady: results of tasks we forwarded, pushed by the node that ran them."""
        objects = self.objects
        done_tasks = set()
        for obj in ready_objects:
            object_id = bytes(obj.object_id)
            nested = [bytes(inner) for inner in obj.nested_refs]
            entry = objects.entry(object_id)
            entry.add_owner_pin(from_node)
            for inner in nested:
                objects.entry(inner).add_owner_pin(from_node)
            if obj.inline:
                objects.mark_ready(object_id, bytes(obj.data), obj.size, nested, obj.is_error)
            else:
                entry.size = obj.size
                entry.remote_locations.add(from_node)
                if entry.waiters:
                    for waiter in list(entry.waiters):
                        if isinstance(waiter, WaitRequest) and not waiter.fetch:
                            entry.waiters.remove(waiter)   # it only asked whether the object exists
                            waiter.object_ready(entry)
                    if entry.waiters:
                        self.object_manager.want(object_id)
            done_tasks.add(object_id[:16])
        for task_id in done_tasks:
            self.router.results_arrived(task_id)

    def object_arrived(self, object_id, data, size, nested, is_error):
        """A pull finished: the object is local now."""
        self.objects.mark_ready(object_id, data, size, nested, is_error)
        self._record_object(object_id, size, copy=True)

    def release_owner_pins(self, object_ids):
        for object_id in object_ids:
            self.objects.decref(object_id)

    def _on_object_freed(self, entry):
        if entry.spilled:
            self.spiller.forget(entry)
        for node_id in entry.owner_pins or ():
            self.peers.free(node_id, entry.object_id)

    def fail_task(self, task, error):
        data = serialization.serialize_error(error).to_bytes()
        self.finish_task(task, [(oid, data, len(data), (), True) for oid in task.spec.return_ids()])

    def _on_actor_exit(self, conn, actor_id, reason, death_data):
        if conn.worker is not None:
            self.actors.actor_exit(conn.worker, actor_id, reason, death_data)

    def _op_kill_actor(self, conn, actor_id, no_restart):
        if actor_id not in self.actors.actors and self.peers.has_peers():
            return self.router.kill_remote_actor(actor_id, no_restart)
        return self.actors.kill(actor_id, no_restart)

    # ---------------------------------------------------------- disconnects

    def on_disconnect(self, conn):
        for request in list(conn.waits.values()) + list(conn.notifiers):
            request.done = True
            for object_id in request.object_ids:
                self.objects.remove_waiter(object_id, request)
        conn.waits.clear()
        for object_id in conn.held:
            self.objects.decref(object_id)
        conn.held.clear()
        self.leases.holder_gone(conn)
        if conn.kind == "driver":
            self.drivers.discard(conn)
            if not any(d.job_id == conn.job_id for d in self.drivers):
                self.actors.job_finished(conn.job_id)
                if self.gcs_writer is not None:
                    self.gcs_writer.publish("job_finished", conn.job_id)
        elif conn.worker is not None:
            self._worker_gone(conn.worker, "died")
        if conn.pid:
            try:
                self.arena.release_pins_of(conn.pid)
            except Exception:
                logger.exception("releasing the pins of pid %s", conn.pid)

    def _worker_gone(self, worker, how):
        if worker.state == wp.DEAD:
            return
        task = worker.task
        self._requeue_pipelined(worker)
        self.leases.worker_gone(worker)
        self.release_worker_resources(worker)
        self.pool.remove(worker)
        _unlink_socket(worker)
        try:
            worker.process.wait(timeout=1.0)
        except Exception:
            pass
        if worker.actor_id and not self._stopping:
            if task is not None and task.spec.task_type == codec.ACTOR_CREATION_TASK:
                task.state = t.RUNNING
                self.tasks.pop(task.spec.task_id, None)
            self.actors.worker_died(worker, worker.process.returncode)
        elif task is not None and task.cancelled and not self._stopping:
            self.fail_task(task, TaskCancelledError(
                task.spec.task_id.hex(), f"The task {task.spec.function_name} was cancelled "
                f"(its worker, pid={worker.pid}, was killed)"))
        elif task is not None and not self._stopping:
            if task.spec.take_retry():
                self._retry(task)
            else:
                self.fail_task(task, WorkerCrashedError.for_task(
                    task.spec, how, worker.pid, self.node_id, worker.process.returncode))
        if not self._stopping:
            self.actors.owner_died(worker)   # the actors it created die with it
        self._ensure_min_workers()
        self._schedule_dispatch()

    def _requeue_pipelined(self, worker):
        """The tasks queued behind ``worker``'s current one, which it will never start."""
        while worker.queued:
            queued = worker.queued.pop()
            queued.state = t.READY
            queued.worker = None
            self.ready.push_front(queued)

    def _ensure_min_workers(self):
        if self._stopping:
            return
        missing = self.min_workers - self.pool.count_task_workers()
        for _ in range(max(0, missing)):
            self.pool.start_worker()

    # --------------------------------------------------------------- output

    def _on_worker_output(self, worker, stream, text):
        targets = [d for d in self.drivers if not worker.job_id or d.job_id == worker.job_id] or self.drivers
        for driver in targets:
            driver.send((p.LOG, stream, text))


def _unlink_socket(worker):
    """A worker that was killed leaves its socket file behind."""
    if worker.direct_path:
        try:
            os.unlink(worker.direct_path)
        except OSError:
            pass
