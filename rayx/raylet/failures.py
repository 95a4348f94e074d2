"""Failure handling on a raylet: what happens when a process of this node dies.

A worker dies (its socket closes, rayx.kill kills it, or it exits before it
ever registered): the tasks pipelined behind its current one go back to the
ready queues, as if never sent; its lease ends; its resources return. If it
hosted an actor, the actor manager restarts the actor or marks it dead
(``ActorManager.worker_died``). Otherwise its task is retried while the
task's retries allow (``TaskSpec.take_retry``), or fails with
``WorkerCrashedError`` (``TaskCancelledError`` if rayx.cancel killed it). In
every case the actors it created die with it (``ActorManager.owner_died``,
detached ones excepted).

A client disconnects: a worker's disconnection is its death (above); when
the last driver of a job leaves, the job's non-detached actors die, here and,
through the GCS ``job_finished`` channel, on every other node. Either way the
arena drops the pins the process still held.

Another node dies (the monitor, ``rayx.monitor``, marks it DEAD in the GCS
``nodes`` table; ``Peers.update`` sees it leave): the tasks this node
forwarded there and that had not finished run again elsewhere while their
retries allow (``max_retries``; an actor call's ``max_task_retries``, and it
goes to the actor's next incarnation, which the monitor starts), else fail
with ``NodeDiedError`` (``ActorDiedError`` for a call) naming the node; the
copies this node kept for the dead node (it owned them) are dropped; its
copies are forgotten. Objects that existed only there are rebuilt from
lineage when someone here needs them (``rayx.raylet.reconstruction``).

While the node stops (its worker pool is closed) deaths are expected and
nothing is retried, failed or restarted.
"""
import logging

from rayx._core import codec
from rayx.exceptions import NodeDiedError, TaskCancelledError, WorkerCrashedError
from rayx.raylet.actors import actor_died
from rayx.gcs import tables
from rayx.raylet import tasks as t
from rayx.raylet import worker_pool as wp

logger = logging.getLogger("rayx.raylet")

ACTOR_CREATION_TASK = codec.ACTOR_CREATION_TASK


class Failures:
    def __init__(self, node_id, tasks, pool, resources, dispatcher, leases, actors, results, drivers,
                 arena, gcs_writer, router, objects, peers):
        self._node_id = node_id
        self._tasks = tasks
        self._pool = pool
        self._resources = resources
        self._dispatcher = dispatcher
        self._leases = leases
        self._actors = actors
        self._results = results
        self._drivers = drivers
        self._arena = arena
        self._gcs_writer = gcs_writer
        self._router = router
        self._objects = objects
        self._peers = peers

    # ------------------------------------------------------------- workers

    def worker_gone(self, worker, how):
        """``worker`` died (``how``: "died", "was killed", "exited before registering")."""
        if worker.state == wp.DEAD:
            return
        task = worker.task
        dispatcher = self._dispatcher
        dispatcher.requeue_pipelined(worker)
        self._leases.worker_gone(worker)
        self._resources.release_worker(worker)
        self._pool.remove(worker)
        stopping = self._pool.closed
        if worker.actor_id and not stopping:
            if task is not None and task.spec.task_type == ACTOR_CREATION_TASK:
                task.state = t.RUNNING
                self._tasks.pop(task.spec.task_id, None)
            self._actors.worker_died(worker, worker.process.returncode)
        elif task is not None and task.cancelled and not stopping:
            self._results.fail(task, TaskCancelledError(
                task.spec.task_id.hex(), f"The task {task.spec.function_name} was cancelled "
                f"(its worker, pid={worker.pid}, was killed)"))
        elif task is not None and not stopping:
            if task.spec.take_retry():
                dispatcher.requeue(task)
            else:
                self._results.fail(task, WorkerCrashedError.for_task(
                    task.spec, how, worker.pid, self._node_id, worker.process.returncode))
        if not stopping:
            self._actors.owner_died(worker)   # the actors it created die with it
        self._pool.keep_minimum()
        dispatcher.schedule()

    def worker_killed(self, worker):
        """rayx.kill just killed the actor's worker: handle its death now rather than
        when its socket closes, so that no later call goes to the dead process."""
        self.worker_gone(worker, "was killed")

    # --------------------------------------------------------------- nodes

    def node_died(self, node_id):
        """Another node is dead (see the module's note)."""
        where = self._peers.describe(node_id)
        lost = self._router.lost_to(node_id)
        if lost:
            logger.warning("%s died with %d task(s) this node sent it; running them again where "
                           "their retries allow", where, len(lost))
        for task in lost:
            spec = task.spec
            if spec.take_retry():
                self._router.resubmit(task)
            elif spec.task_type == codec.ACTOR_TASK:
                self._results.fail(task, actor_died(spec.actor_class_name(), (
                    f"its {where} while the call {spec.function_name} ran, and max_task_retries "
                    f"does not allow running it again"), task))
            else:
                self._results.fail(task, NodeDiedError(
                    f"The task {spec.function_name} (task {spec.task_id.hex()[:16]}) was running on "
                    f"{where}; it ran {spec.attempt + 1} time(s) and no retries are left "
                    f"(max_retries={spec.max_retries})."))
        self._objects.node_died(node_id)

    # ------------------------------------------------------------- clients

    def client_gone(self, conn):
        """A driver or worker disconnected (its refs, waits and leases are dropped
        already): the failure part."""
        if conn.kind == "driver":
            if not self._drivers.has_job(conn.job_id):
                self._actors.job_finished(conn.job_id)
                if self._gcs_writer is not None:
                    self._gcs_writer.publish(tables.JOB_FINISHED_CHANNEL, conn.job_id)
        elif conn.worker is not None:
            self.worker_gone(conn.worker, "died")
        if conn.pid:
            try:
                self._arena.release_pins_of(conn.pid)
            except Exception:
                logger.exception("releasing the pins of pid %s", conn.pid)
