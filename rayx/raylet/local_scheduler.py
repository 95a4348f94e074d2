"""The local scheduler: where a task goes when it is submitted to this node.

A task created on this node (SUBMIT), forwarded here by another node
(ForwardTasks), or run again (an actor's restart) has its spec written to the
GCS ``tasks`` table (lineage, batched; once, on its first attempt here) and
is then either taken elsewhere by the router (bottom-up scheduling) or kept:
an actor call goes to the actor manager, which orders it; any other task
waits for its inputs (``rayx.raylet.dependencies``), then goes to the ready
queue of its resource shape for the dispatcher, or, if this node could never
run it, to the infeasible list until a node that fits joins (the driver is
warned). Every task kept here enters the node's task table (``TaskTable``),
which it leaves when it finishes. The scheduler owns the infeasible list, and
cancels (rayx.cancel) tasks that have not finished.
"""
from rayx import messages
from rayx._core import codec
from rayx.exceptions import ACTOR_CALL_FORCE_CANCEL, TaskCancelledError
from rayx.gcs import tables
from rayx.raylet import tasks as t

NORMAL_TASK = codec.NORMAL_TASK
ACTOR_TASK = codec.ACTOR_TASK
ACTOR_CREATION_TASK = codec.ACTOR_CREATION_TASK


class LocalScheduler:
    def __init__(self, loop, node_id, tasks, ready, resources, dependencies, schedule_dispatch, actors, results,
                 peers, drivers, gcs_writer):
        self._loop = loop
        self._node_id = node_id
        self._tasks = tasks
        self._ready = ready
        self._resources = resources
        self._dependencies = dependencies
        self._track = dependencies.track
        self._schedule_dispatch = schedule_dispatch
        self._actors = actors
        self._results = results
        self._peers = peers
        self._drivers = drivers
        self._gcs_writer = gcs_writer
        self._router = self._route = None
        self._inputs_ready = self.inputs_ready    # bound once: every Task calls it
        self._infeasible = []                # tasks no node could run when they became ready

    def connect(self, router):
        """The router, which takes tasks that should not run here (built after us)."""
        self._router = router
        self._route = router.route

    # -------------------------------------------------------------- submit

    def submit(self, spec, submitter=None, hold_inputs=True, owner_node=None):
        """A task was created on this node (or forwarded to it by ``owner_node``)."""
        task = t.Task(spec, submitter, self._inputs_ready)
        task.owner_node = owner_node
        if spec.attempt == 0 and owner_node is None:
            self.record_lineage(spec)
        if owner_node is None and hold_inputs and self._route(task):
            return
        self.submit_here(task, inputs_held=not hold_inputs)

    def record_lineage(self, spec):
        """GCS ``tasks``: the task's spec, with this node answering for it (batched)."""
        if self._gcs_writer is not None:
            tables.TASKS.put(self._gcs_writer, spec.task_id, tables.Lineage(self._node_id, spec))

    def submit_here(self, task, inputs_held=False):
        spec = task.spec
        self._tasks[spec.task_id] = task
        if spec.task_type == ACTOR_TASK:
            self._actors.submit_call(task)
            return
        if spec.task_type == ACTOR_CREATION_TASK:
            self._actors.creation_submitted(task)
        self._track(task, not inputs_held)
        if not task.missing:
            self._inputs_ready(task)

    def accept_forwarded(self, spec, from_node):
        """ForwardTasks: run a task another node placed here; its results go back to that node."""
        self._peers.heard_from(from_node)
        self.submit(spec, None, owner_node=from_node)

    def inputs_ready(self, task):
        """Every input of the task is local: it fails if one is an error, else it is
        queued for the dispatcher (or set aside if no node could run it)."""
        error = self._dependencies.error_results(task)
        if error is not None:
            # An input is an error: the task fails with it, without running.
            self._results.finish(task, error)
            return
        task.request = self._ready.request_for(task)
        if not self._resources.feasible(task.request):
            task.state = t.INFEASIBLE
            self._infeasible.append(task)
            self._loop.create_task(self._warn_if_still_infeasible(task))
            return
        task.state = t.READY
        self._ready.push(task)
        self._schedule_dispatch()

    # ---------------------------------------------------------- infeasible

    async def _warn_if_still_infeasible(self, task):
        # Other nodes may have joined since the last heartbeat: look before warning.
        await self._peers.refresh()
        if task in self._infeasible:
            self.warn_infeasible(task)

    def warn_infeasible(self, task):
        resources = self._resources
        self._drivers.warn(task.submitter, (
            f"Warning: the task {task.spec.function_name} requests {dict(task.spec.resources)}, "
            f"which no node in the cluster can satisfy (this node has "
            f"{resources.as_floats(resources.total)}). It stays pending until a node "
            f"that fits joins; `rayx status` lists it."))

    def infeasible_requests(self):
        """The resource requests of the infeasible tasks (for the heartbeat)."""
        return [dict(task.spec.resources) for task in self._infeasible]

    def move_infeasible_to_router(self):
        """Nodes joined: what fit nowhere here goes up to the global scheduler (with,
        for an actor creation, the calls already queued for that actor)."""
        local, self._infeasible = self._infeasible, []
        router = self._router
        for task in local:
            spec = task.spec
            self._tasks.pop(spec.task_id, None)
            calls = self._actors.move_away(spec.actor_id) if spec.task_type == ACTOR_CREATION_TASK else ()
            router.adopt(task)
            for call in calls:
                self._dependencies.forget(call)
                self._tasks.pop(call.spec.task_id, None)
                router.adopt_call(call)

    # -------------------------------------------------------------- cancel

    def cancel_queued(self, task):
        """Drop a task that has not started (waiting or queued)."""
        if task.state == t.WAITING:
            self._dependencies.forget(task)
        elif task.state == t.READY:
            self._ready.remove(task)
        elif task.state == t.INFEASIBLE:
            try:
                self._infeasible.remove(task)
            except ValueError:
                pass

    def cancel(self, task_id, force):
        """rayx.cancel: drop the task if it has not started; interrupt it (or, with
        ``force``, kill its worker) if it runs. Returns whether it was found here."""
        task = self._tasks.get(task_id)
        if task is None:
            return False
        if task.spec.task_type == ACTOR_TASK:
            if force:
                return ACTOR_CALL_FORCE_CANCEL      # the caller raises ValueError with it
            self._actors.cancel_call(task)
            return True
        if task.spec.task_type != NORMAL_TASK:
            raise ValueError("only tasks can be cancelled; use rayx.kill() for actors")
        if task.state in (t.WAITING, t.READY, t.INFEASIBLE):
            self.cancel_queued(task)
            self._results.fail(task, TaskCancelledError.before_it_ran(task.spec))
            return True
        worker = task.worker
        task.cancelled = True
        if force and worker is not None and worker.task is task:
            worker.process.kill()
        elif worker is not None:
            worker.conn.send(messages.CANCEL(task_id))
        return True
