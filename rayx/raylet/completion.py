"""Task completion: a worker reports a task done (TASK_DONE), and the task's
results go where they are awaited.

``TaskResults`` finishes a task, wherever its results come from (its worker,
an error in one of its inputs, a cancellation, its worker's or actor's
death): each result becomes READY in the object table (waking what waits on
it), its location goes to the GCS ``objects`` table (batched), and for a task
another node forwarded here, the results go back to that node, which owns
them, while this node keeps its copies until the owner frees them. Then the
task stops holding its inputs; refs nested in them that a process here kept
are borrowed from the owner (``ObjectTable.borrow_from``), in the same
message as the results.

``Completion`` handles TASK_DONE: the run time is recorded (for pipelining and
the heartbeat), the task is retried when it raised a retryable error and its
retries allow, else finished; the worker goes on to the next task pipelined
on it, or back to the idle pool, or, after its last call (``max_calls``),
away. Reports of actor workers go to the actor manager.
"""
from rayx.runtime import serialization
from rayx._core import codec
from rayx.gcs import tables
from rayx.protos import rayx_pb2
from rayx.raylet import worker_pool as wp

ACTOR_CREATION_TASK = codec.ACTOR_CREATION_TASK


class TaskResults:
    def __init__(self, node_id, tasks, objects, peers, release_inputs, gcs_writer):
        self._node_id = node_id
        self._tasks = tasks
        self._objects = objects
        self._peers = peers
        self._release_inputs = release_inputs
        self._gcs_writer = gcs_writer

    def finish(self, task, results):
        """``results``: [(object id, inline data or None, size, nested refs, is_error)]."""
        spec = task.spec
        self._tasks.pop(spec.task_id, None)
        objects = self._objects
        owner = task.owner_node
        if owner is not None and self._peers.is_dead(owner):
            owner = None
        pushed = []
        for object_id, data, size, nested, is_error in results:
            if owner is not None:
                # Keep our copy (and what it refers to) until the owner frees it.
                objects.keep_for(owner, object_id)
                for inner in nested:
                    objects.keep_for(owner, inner)
                pushed.append(rayx_pb2.ReadyObject(
                    object_id=object_id, inline=data is not None, data=data or b"", size=size,
                    is_error=is_error, nested_refs=list(nested)))
            objects.mark_ready(object_id, data, size, nested, is_error)
            self.record_object(object_id, size)
        if spec.task_type != ACTOR_CREATION_TASK:
            # An actor's constructor arguments stay alive for its restarts.
            self._release_inputs(task)
        if pushed:
            if spec.nested_refs:
                # Refs it was given that someone here kept: the owner keeps them for us.
                pushed[0].borrowed_refs.extend(objects.borrow_from(owner, spec.nested_refs))
            for ready in pushed:
                self._peers.object_ready(owner, ready)

    def fail(self, task, error):
        """Finish the task with ``error`` (an exception) as every result."""
        self.fail_with(task, serialization.serialize_error(error).to_bytes())

    def fail_with(self, task, data):
        """Finish the task with the serialized error ``data`` as every result."""
        self.finish(task, [(oid, data, len(data), (), True) for oid in task.spec.return_ids()])

    def record_object(self, object_id, size, node_id=None):
        """GCS ``objects``: this node (or ``node_id``) made the object (one SET, batched
        into an MSET)."""
        if self._gcs_writer is not None:
            tables.OBJECTS.put(self._gcs_writer, object_id, tables.ObjectLocation(node_id or self._node_id, size))


class Completion:
    def __init__(self, loop, dispatcher, results, actors, resources, pool):
        self._loop = loop
        self._record_run = dispatcher.record_run
        self._requeue = dispatcher.requeue
        self._requeue_pipelined = dispatcher.requeue_pipelined
        self._schedule = dispatcher.schedule
        self._finish = results.finish
        self._actors = actors
        self._release_worker = resources.release_worker
        self._pool = pool

    def task_done(self, conn, task_id, results, retryable, exiting=False):
        """TASK_DONE from a worker; ``exiting``: it exits now (max_calls reached)."""
        worker = conn.worker
        if worker is None:
            return
        task = worker.task
        if task is None or task.spec.task_id != task_id:
            if worker.actor_id:
                self._actors.call_done(worker, task_id, results, retryable)
            return
        if task.spec.task_type == ACTOR_CREATION_TASK:
            worker.task = None
            self._actors.creation_done(task, worker, results)
            self._schedule()
            return
        self._record_run(task)
        if retryable and task.spec.take_retry():
            self._requeue(task)
        else:
            self._finish(task, results)
        if exiting:
            # max_calls reached: the worker exits now, which is no crash. Tasks queued
            # behind this one run elsewhere, as if never sent.
            self._requeue_pipelined(worker)
            self._release_worker(worker)
            worker.task = None
            worker.state = wp.EXITING
            self._pool.keep_minimum()
        elif worker.queued:
            # The next pipelined task is already with the worker; it keeps the resources.
            worker.task = worker.queued.popleft()
            worker.task.started = self._loop.time()
            worker.display_name = worker.task.spec.function_name.rpartition(".")[2]
        else:
            self._release_worker(worker)
            worker.task = None
            self._pool.push_idle(worker)
        self._schedule()
