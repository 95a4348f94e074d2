"""``rayx.get_runtime_context()``: the job, task, actor and node the caller runs as."""
from rayx.actor import handle_by_id


class RuntimeContext:
    def __init__(self, worker, namespace):
        self._worker = worker
        self._namespace = namespace

    def get_job_id(self):
        return self._worker.current_job_id().hex()

    def get_task_id(self):
        task_id = self._worker.context.task_id
        return None if self._worker.mode == "driver" or task_id is None else task_id.hex()

    def get_actor_id(self):
        actor_id = self._worker.context.actor_id
        return actor_id.hex() if actor_id else None

    def is_canceled(self):
        """True once rayx.cancel reached the task or actor call running here (a running
        call of a sync or threaded actor is not interrupted: it can check this)."""
        worker = self._worker
        task_id = worker.context.task_id
        executor = worker.executor
        if worker.mode == "driver" or task_id is None or executor is None:
            raise RuntimeError("is_canceled() is only available inside a task or actor call")
        if executor.hosts_async_actor():
            raise RuntimeError("is_canceled() is not available in async actors (rayx.cancel "
                               "cancels their calls' asyncio tasks)")
        return executor.is_cancelled(task_id.binary())

    def get_node_id(self):
        return self._worker.node_id.hex()

    def get_worker_id(self):
        return self._worker.worker_id.hex()

    @property
    def namespace(self):
        return self._namespace

    def get_namespace(self):
        return self._namespace

    @property
    def current_actor(self):
        actor_id = self._worker.context.actor_id
        if not actor_id:
            raise RuntimeError("current_actor is only available inside an actor")
        return handle_by_id(actor_id)

    def get(self):
        return {"job_id": self.get_job_id(), "task_id": self.get_task_id(),
                "actor_id": self.get_actor_id(), "node_id": self.get_node_id(),
                "namespace": self._namespace}
