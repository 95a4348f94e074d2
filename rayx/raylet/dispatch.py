"""Dispatch: from the ready queues to the node's workers.

Once per event-loop turn (``schedule``) the dispatcher walks the ready queues,
one per resource shape, and runs each queue's head task on an idle worker
while the node's resources allow. When tasks fit but no worker is idle it
starts as many workers as could run now (at most ``MAX_STARTING_WORKERS`` at
a time). When every CPU is busy it pipelines: short tasks (by the run times it
measures per function) queue on a worker behind a short running task of the
same shape, so the worker goes from one to the next without a round trip to
the raylet (``rayx._private.pipelining``; at most ``PIPELINE_DEPTH`` in flight
per worker). A worker about to block in ``get`` gives back the tasks queued
on it that it has not started.
"""
import itertools
from operator import itemgetter

from rayx import messages
from rayx._core import codec
from rayx._private.pipelining import PipelineRule, RunTimes
from rayx.raylet import tasks as t
from rayx.raylet import worker_pool as wp

MAX_STARTING_WORKERS = 4
PIPELINE_DEPTH = 4             # tasks in flight per worker when every CPU is busy
PIPELINE_MAX_SECONDS = 0.002   # only functions measured to run shorter than this are pipelined
NODE_AVERAGE_WEIGHT = 0.05     # of the newest run in the node-wide average run time

EXECUTE = messages.EXECUTE
NORMAL_TASK = codec.NORMAL_TASK
ACTOR_CREATION_TASK = codec.ACTOR_CREATION_TASK


class Dispatcher:
    def __init__(self, loop, ready, resources, pool, argument_values, actor_placed):
        self._loop = loop
        self._ready = ready
        self._resources = resources
        self._pool = pool
        self._argument_values = argument_values
        self._actor_placed = actor_placed       # ActorManager.placed(actor id, worker)
        self._scheduled = False
        self.run_times = RunTimes()              # per function, for pipelining
        self.pipeline_rule = PipelineRule(short_seconds=PIPELINE_MAX_SECONDS,
                                          budget_seconds=float("inf"), max_depth=PIPELINE_DEPTH)
        self.node_task_seconds = 0.0             # every task's run time, averaged (heartbeats)

    def schedule(self):
        """Dispatch at the end of this event-loop turn (once, however often asked)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self):
        self._scheduled = False
        resources = self._resources
        pool = self._pool
        wanted_workers = 0
        for queue in self._ready.queues.values():
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
        elif any(self._ready.queues.values()):
            self._pipeline()

    def _runnable_now(self, queue, first_allocation):
        """How many tasks at the head of ``queue`` the free resources could run now
        (``first_allocation`` is already taken for the first); releases everything."""
        resources = self._resources
        taken = [first_allocation]
        for task in itertools.islice(queue, 1, MAX_STARTING_WORKERS):
            allocation = resources.try_acquire(task.request)
            if allocation is None:
                break
            taken.append(allocation)
        for allocation in taken:
            resources.release(allocation)
        return len(taken)

    def _run(self, task, worker, allocation):
        spec = task.spec
        task.state = t.RUNNING
        task.worker = worker
        worker.state = wp.BUSY
        worker.task = task
        task.started = self._loop.time()
        worker.allocation = allocation
        worker.display_name = spec.function_name.rpartition(".")[2]
        worker.job_id = spec.job_id
        if spec.task_type == ACTOR_CREATION_TASK:
            worker.display_name = spec.actor_class_name()
            worker.actor_id = spec.actor_id
            self._actor_placed(spec.actor_id, worker)
        worker.conn.send(EXECUTE(spec, self._argument_values(task), allocation.gpu_ids()))

    def _pipeline(self):
        """Every CPU is busy: queue more tasks behind running ones of the same shape,
        so a worker goes from one task to the next without a round trip to us."""
        expected = self.pipeline_rule.expected
        has_room = self.pipeline_rule.has_room
        run_times = self.run_times
        busy = {}          # shape -> [[tasks in flight, their expected seconds, worker]]
        for worker in self._pool.workers.values():
            task = worker.task
            if (task is None or worker.state != wp.BUSY or worker.conn.waits
                    or task.spec.task_type != NORMAL_TASK):
                continue
            load = expected(run_times, task.spec.function_id)
            if load is None:
                continue   # a long or unknown task runs alone
            for queued in worker.queued:
                load += expected(run_times, queued.spec.function_id) or 0.0
            busy.setdefault(task.shape, []).append([1 + len(worker.queued), load, worker])
        by_in_flight = itemgetter(0)
        for shape, slots in busy.items():
            queue = self._ready.queues.get(shape)
            while queue and slots:
                slots.sort(key=by_in_flight)
                slot = slots[0]
                task = queue[0]
                seconds = expected(run_times, task.spec.function_id) \
                    if task.spec.task_type == NORMAL_TASK else None
                if seconds is None:
                    break     # long or unknown tasks never wait behind others
                if not has_room(slot[0], slot[1], False, seconds):
                    slots.pop(0)
                    continue
                queue.popleft()
                worker = slot[2]
                task.state = t.RUNNING
                task.worker = worker
                worker.queued.append(task)
                slot[0] += 1
                slot[1] += seconds
                worker.conn.send(EXECUTE(task.spec, self._argument_values(task), worker.allocation.gpu_ids()))

    def record_run(self, task):
        """The task ran to its end: its run time joins its function's average and the node's."""
        seconds = self._loop.time() - task.started
        self.run_times.record(task.spec.function_id, seconds)
        average = self.node_task_seconds
        self.node_task_seconds = seconds if not average else \
            (1 - NODE_AVERAGE_WEIGHT) * average + NODE_AVERAGE_WEIGHT * seconds

    def requeue(self, task):
        """Run the task again, ahead of the others of its shape: a retry, or a task its
        worker will not start."""
        task.state = t.READY
        task.worker = None
        self._ready.push_front(task)
        self.schedule()

    def requeue_pipelined(self, worker):
        """The tasks queued behind ``worker``'s current one, which it will never start."""
        queued = worker.queued
        while queued:
            self.requeue(queued.pop())

    def give_back(self, conn, task_ids):
        """GIVE_BACK: a worker about to block in get returns the queued tasks it has not started."""
        worker = conn.worker
        if worker is None:
            return
        wanted = set(task_ids)
        returned = [task for task in worker.queued if task.spec.task_id in wanted]
        for task in reversed(returned):
            worker.queued.remove(task)
            self.requeue(task)
