"""A task's inputs on this node: holding them, waiting for them, and handing
their values to the worker that runs it.

A task holds a reference to each of its inputs (the ObjectRefs among its
arguments and those nested inside them) from its submission until it
finishes, so they outlive every process that dropped them meanwhile. It waits
for the top-level ones that are not local yet: it registers itself as a waiter
on each (``Task.object_ready`` counts them down) and the object manager pulls
those made on other nodes. An object made by a task of this node, or by a task
this node forwarded (its results are pushed back here), is never pulled.
"""


class Dependencies:
    def __init__(self, objects, spiller, tasks, pull, has_peers, peers_died):
        self._objects = objects
        self._spiller = spiller
        self._tasks = tasks
        self._pull = pull                # ObjectManager.want: pull an object here
        self._has_peers = has_peers
        self._peers_died = peers_died    # whether any other node ever died
        self._is_forwarded = None

    def connect(self, is_forwarded):
        """``is_forwarded(task_id)``: another node runs that task for us (the router)."""
        self._is_forwarded = is_forwarded

    def hold_inputs(self, task):
        objects = self._objects
        for object_id in task.deps:
            objects.incref(object_id)
        for object_id in task.spec.nested_refs:
            objects.incref(object_id)

    def release_inputs(self, task):
        objects = self._objects
        for object_id in task.deps:
            objects.decref(object_id)
        for object_id in task.spec.nested_refs:
            objects.decref(object_id)

    def track(self, task, hold_inputs=True):
        """Hold the task's inputs (unless held already) and wait for those not ready;
        ``task.missing`` counts them."""
        if hold_inputs:
            self.hold_inputs(task)
        objects = self._objects
        missing = 0
        for object_id in task.deps:
            if not objects.is_ready(object_id):
                self.want_object(objects.add_waiter(object_id, task))
                missing += 1
        task.missing = missing

    def forget(self, task):
        """Stop waiting for the task's inputs (it was cancelled or moved)."""
        objects = self._objects
        for object_id in task.deps:
            objects.remove_waiter(object_id, task)

    def want_object(self, entry):
        """Someone here waits for a non-local object: pull it unless it is being made
        here (the pull also finds out when an object is lost, with or without peers)."""
        task_id = entry.object_id[:16]
        if entry.remote_locations:
            self._pull(entry.object_id)
        elif task_id in self._tasks or self._is_forwarded(task_id):
            return                      # made here, or pushed here by the node running it
        elif self._has_peers() or self._peers_died():
            self._pull(entry.object_id)

    def error_results(self, task):
        """Error results for the task if one of its inputs is an error, else None."""
        objects = self._objects
        for object_id in task.deps:
            entry = objects.get(object_id)
            if entry is not None and entry.is_error:
                return [(oid, entry.data, entry.size, (), True) for oid in task.spec.return_ids()]
        return None

    def argument_values(self, task):
        """{object id: inline bytes, or None when the object is in the arena} of the task's inputs."""
        objects = self._objects
        values = {}
        for object_id in task.deps:
            entry = objects.get(object_id)
            if entry.spilled:
                self._spiller.restore(entry)
            values[object_id] = None if entry.in_arena else entry.data
        return values
