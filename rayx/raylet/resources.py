"""Exact resource accounting for one node: CPUs, GPUs, memory and custom resources.

Amounts are kept as integers in units of 1/10000 so that fractional requests
(0.5 CPU, 0.25 GPU) add up exactly and a node never drifts by a rounding error.
GPUs are also tracked per device so each task gets concrete ids for
``CUDA_VISIBLE_DEVICES``: a whole-number request takes that many free devices,
a fraction below one shares a device with others.
"""

UNIT = 10000


def to_fixed(amount):
    return int(round(float(amount) * UNIT))


def from_fixed(value):
    return value / UNIT


def fixed_request(resources):
    """{name: float} -> {name: fixed int}, dropping zero amounts; rejects negatives."""
    request = {}
    for name, amount in resources.items():
        value = to_fixed(amount)
        if value < 0:
            raise ValueError(f"resource {name!r} must not be negative, got {amount}")
        if value:
            request[name] = value
    return request


class Allocation:
    """What one task holds: its fixed request and the GPU share per device id."""

    __slots__ = ("request", "gpus")

    def __init__(self, request, gpus):
        self.request = request
        self.gpus = gpus

    def gpu_ids(self):
        return [gpu_id for gpu_id, _ in self.gpus]


class NodeResources:
    def __init__(self, total):
        self.total = fixed_request(total)
        self.available = dict(self.total)
        self._gpu_free = [UNIT] * int(from_fixed(self.total.get("GPU", 0)))

    def feasible(self, request):
        """Could this node ever run the request (with everything free)?"""
        total = self.total
        for name, amount in request.items():
            if total.get(name, 0) < amount:
                return False
        gpus = request.get("GPU", 0)
        return not (gpus > UNIT and gpus % UNIT)

    def fits_now(self, request):
        available = self.available
        for name, amount in request.items():
            if available.get(name, 0) < amount:
                return False
        return True

    def try_acquire(self, request):
        """Take the request if it fits now; return an Allocation or None."""
        if not self.fits_now(request):
            return None
        gpus = []
        want = request.get("GPU", 0)
        if want:
            gpus = self._take_gpus(want)
            if gpus is None:
                return None
        available = self.available
        for name, amount in request.items():
            available[name] -= amount
        return Allocation(request, gpus)

    def _take_gpus(self, want):
        free = self._gpu_free
        if want >= UNIT:
            ids = [i for i, share in enumerate(free) if share == UNIT][: want // UNIT]
            if len(ids) < want // UNIT:
                return None
            for i in ids:
                free[i] = 0
            return [(i, UNIT) for i in ids]
        # A fraction: the most used device that still has room (pack fractions).
        candidates = [i for i, share in enumerate(free) if share >= want]
        if not candidates:
            return None
        best = min(candidates, key=lambda i: free[i])
        free[best] -= want
        return [(best, want)]

    def release(self, allocation):
        available = self.available
        for name, amount in allocation.request.items():
            available[name] += amount
        for gpu_id, share in allocation.gpus:
            self._gpu_free[gpu_id] += share
        allocation.request = {}
        allocation.gpus = []

    def release_cpu(self, allocation):
        """Give back the CPUs of a task blocked in ``get`` (it keeps the rest)."""
        cpus = allocation.request.get("CPU", 0)
        if cpus:
            self.available["CPU"] += cpus
        return cpus

    def reacquire_cpu(self, cpus):
        """Take back a blocked task's CPUs; the node may be oversubscribed briefly."""
        if cpus:
            self.available["CPU"] -= cpus

    def release_worker(self, worker):
        """Take back what a worker holds: its allocation, less the CPUs it gave back
        while blocked in ``get`` (those are free already)."""
        if worker.allocation is not None:
            if worker.blocked_cpus:
                self.reacquire_cpu(worker.blocked_cpus)
                worker.blocked_cpus = 0
            self.release(worker.allocation)
            worker.allocation = None

    def as_floats(self, which):
        return {name: from_fixed(value) for name, value in which.items()}
