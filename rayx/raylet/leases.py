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
(``Raylet._on_wait``). A lease ends when its holder returns it, when the
holder disconnects (the worker goes back to the pool; tasks it was still
running finish first, their results unread), or when the worker dies (the
holder sees its socket close and retries or fails the tasks it had sent).
"""
from rayx.raylet import worker_pool as wp
from rayx.raylet.resources import fixed_request


class Leases:
    def __init__(self, raylet):
        self.raylet = raylet
        self.held = {}          # holder connection -> {worker id: Worker}
        self._requests = {}     # shape -> fixed-point request

    def __len__(self):
        return sum(len(workers) for workers in self.held.values())

    def grant(self, conn, resources):
        """("granted", worker id, socket path, pid) or ("busy", spill)."""
        raylet = self.raylet
        spill = raylet.peers.has_peers()
        shape = tuple(sorted((name, float(amount)) for name, amount in resources.items() if amount))
        request = self._requests.get(shape)
        if request is None:
            request = self._requests[shape] = fixed_request(resources)
        if raylet.ready.queues.get(shape):
            return ("busy", spill)
        allocation = raylet.resources.try_acquire(request)
        if allocation is None:
            return ("busy", spill)
        worker = self._idle_listening_worker()
        if worker is None:
            raylet.resources.release(allocation)
            if not raylet.pool.starting:
                raylet.pool.start_worker()
            return ("busy", spill)
        worker.state = wp.BUSY
        worker.allocation = allocation
        worker.lease_holder = conn
        worker.job_id = conn.job_id
        self.held.setdefault(conn, {})[worker.worker_id] = worker
        return ("granted", worker.worker_id, worker.direct_path, worker.pid)

    def _idle_listening_worker(self):
        pool = self.raylet.pool
        skipped = []
        worker = pool.pop_idle()
        while worker is not None and not worker.direct_path:
            skipped.append(worker)          # registered, not listening yet
            worker = pool.pop_idle()
        for other in reversed(skipped):
            pool.push_idle(other)
        return worker

    def give_back(self, conn, worker_ids):
        """The holder returns leases it no longer needs."""
        workers = self.held.get(conn)
        if not workers:
            return
        for worker_id in worker_ids:
            worker = workers.pop(worker_id, None)
            if worker is not None:
                self._end(worker)
        if not workers:
            del self.held[conn]
        self.raylet._schedule_dispatch()

    def holder_gone(self, conn):
        for worker in self.held.pop(conn, {}).values():
            self._end(worker)

    def worker_gone(self, worker):
        holder = worker.lease_holder
        if holder is not None:
            workers = self.held.get(holder)
            if workers is not None:
                workers.pop(worker.worker_id, None)
                if not workers:
                    del self.held[holder]
            worker.lease_holder = None

    def _end(self, worker):
        worker.lease_holder = None
        if worker.state == wp.DEAD:
            return
        self.raylet.release_worker_resources(worker)
        self.raylet.pool.push_idle(worker)
