"""Worker leases: the raylet lends an idle worker, with the resources of one
task shape, to a caller on its node, which then sends that shape's tasks to
the worker's own socket (``rayx.runtime.leased_tasks``). The raylet sees no message per
task; it still decides who gets a worker and accounts the resources.

A lease is granted only at once: when the shape's resources are free now,
no task of that shape waits in the raylet's own queue (those come first), and
an idle worker is listening. Otherwise the answer is "busy", with ``spill``
set when other nodes exist (the caller should then hand its queued tasks to
the raylet, which may send them elsewhere).

A leased worker that blocks in ``get`` gives its CPUs back like any worker
(``rayx.raylet.waits``). A lease ends when its holder returns it, when the
holder disconnects (the worker goes back to the pool; tasks it was still
running finish first, their results unread), or when the worker dies (the
holder sees its socket close and retries or fails the tasks it had sent).
"""
from rayx._core import codec
from rayx.raylet import worker_pool as wp


class Leases:
    def __init__(self, resources, pool, ready, has_peers, schedule_dispatch):
        self._resources = resources
        self._pool = pool
        self._ready = ready
        self._has_peers = has_peers
        self._schedule_dispatch = schedule_dispatch
        self._held = {}         # holder connection -> {worker id: Worker}

    def __len__(self):
        return sum(len(workers) for workers in self._held.values())

    def grant(self, conn, resources):
        """REQUEST "lease": ("granted", worker id, socket path, pid) or ("busy", spill)."""
        spill = self._has_peers()
        shape = codec.TaskSpec(resources=resources).shape_key()
        if self._ready.has_tasks(shape):
            return ("busy", spill)
        allocation = self._resources.try_acquire(self._ready.request(shape, resources))
        if allocation is None:
            return ("busy", spill)
        worker = self._idle_listening_worker()
        if worker is None:
            self._resources.release(allocation)
            if not self._pool.starting:
                self._pool.start_worker()
            return ("busy", spill)
        worker.state = wp.BUSY
        worker.allocation = allocation
        worker.lease_holder = conn
        worker.job_id = conn.job_id
        self._held.setdefault(conn, {})[worker.worker_id] = worker
        return ("granted", worker.worker_id, worker.direct_path, worker.pid)

    def _idle_listening_worker(self):
        pool = self._pool
        skipped = []
        worker = pool.pop_idle()
        while worker is not None and not worker.direct_path:
            skipped.append(worker)          # registered, not listening yet
            worker = pool.pop_idle()
        for other in reversed(skipped):
            pool.push_idle(other)
        return worker

    def give_back(self, conn, worker_ids):
        """RETURN_LEASES: the holder returns leases it no longer needs."""
        workers = self._held.get(conn)
        if not workers:
            return
        for worker_id in worker_ids:
            worker = workers.pop(worker_id, None)
            if worker is not None:
                self._end(worker)
        if not workers:
            del self._held[conn]
        self._schedule_dispatch()

    def holder_gone(self, conn):
        for worker in self._held.pop(conn, {}).values():
            self._end(worker)

    def worker_gone(self, worker):
        holder = worker.lease_holder
        if holder is not None:
            workers = self._held.get(holder)
            if workers is not None:
                workers.pop(worker.worker_id, None)
                if not workers:
                    del self._held[holder]
            worker.lease_holder = None

    def _end(self, worker):
        worker.lease_holder = None
        if worker.state == wp.DEAD:
            return
        self._resources.release_worker(worker)
        self._pool.push_idle(worker)
