"""Tasks inside a raylet: waiting for their inputs, queued by resource shape,
and running on a worker.

A ``Task`` counts the inputs it still waits for (it registers itself as a
waiter on each missing object). Once they are all local it moves to the ready
queue of its resource shape; the dispatcher takes tasks from those queues in
order while the node's resources and idle workers allow. The ``TaskTable``
holds every task of this node from its submission until it finishes.
"""
import collections

from rayx.raylet.resources import fixed_request

WAITING = 0      # for its inputs
READY = 1        # queued for a worker and resources
RUNNING = 2
INFEASIBLE = 3   # no node could ever run it; waits for one to join


class Task:
    __slots__ = ("spec", "submitter", "deps", "missing", "state", "request", "shape",
                 "worker", "on_ready", "owner_node", "started", "cancelled")

    def __init__(self, spec, submitter, on_ready):
        self.spec = spec
        self.submitter = submitter
        self.deps = tuple(dict.fromkeys(spec.arg_refs()))
        self.missing = 0
        self.state = WAITING
        self.shape = spec.shape_key()
        self.request = None
        self.worker = None
        self.on_ready = on_ready
        self.owner_node = None      # the node that forwarded this task here, if any
        self.started = 0.0          # loop time it started running
        self.cancelled = False      # rayx.cancel reached it while it ran

    def object_ready(self, entry):
        self.missing -= 1
        if self.missing == 0:
            self.on_ready(self)


class TaskTable(dict):
    """task id -> Task, for the tasks this node holds from submission until they
    finish (tasks forwarded to other nodes are the router's). A dict, so that the
    per-task paths add and drop tasks without a Python call."""

    __slots__ = ()

    def counts(self):
        """(waiting for inputs, running): the heartbeat's load figures."""
        waiting = running = 0
        for task in self.values():
            if task.state == WAITING:
                waiting += 1
            elif task.state == RUNNING:
                running += 1
        return waiting, running


class ReadyQueues:
    """FIFO queues of ready tasks, one per resource shape (``TaskSpec.shape_key``),
    and each shape's request in fixed-point units, computed once."""

    def __init__(self):
        self.queues = collections.OrderedDict()
        self._requests = {}

    def request(self, shape, resources):
        """The fixed-point request of ``shape`` (whose resources are ``resources``)."""
        request = self._requests.get(shape)
        if request is None:
            request = self._requests[shape] = fixed_request(resources)
        return request

    def request_for(self, task):
        request = self._requests.get(task.shape)
        return request if request is not None else self.request(task.shape, task.spec.resources)

    def has_tasks(self, shape):
        """Whether tasks of ``shape`` wait in its queue."""
        return bool(self.queues.get(shape))

    def push(self, task):
        queue = self.queues.get(task.shape)
        if queue is None:
            queue = self.queues[task.shape] = collections.deque()
        queue.append(task)

    def push_front(self, task):
        queue = self.queues.get(task.shape)
        if queue is None:
            queue = self.queues[task.shape] = collections.deque()
        queue.appendleft(task)

    def __len__(self):
        return sum(len(q) for q in self.queues.values())

    def remove(self, task):
        queue = self.queues.get(task.shape)
        if queue is not None:
            try:
                queue.remove(task)
                return True
            except ValueError:
                pass
        return False
