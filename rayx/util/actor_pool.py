"""``rayx.util.ActorPool``: spread work over a fixed set of actors, as Ray's ActorPool.

Each submission goes to an idle actor, or waits in a local queue until one is
free again (an actor is free once its result has been taken back with one of
the ``get_next*`` calls). Results come back in submission order
(``get_next``/``map``) or as they finish (``get_next_unordered``/
``map_unordered``). Everything is local bookkeeping in the calling process;
the actors themselves are ordinary actors.
"""
import collections

from rayx import api


def _refs_of(future):
    """The ObjectRefs behind what ``fn(actor, value)`` returned (a ref or a list of refs)."""
    return list(future) if isinstance(future, (list, tuple)) else [future]


class ActorPool:
    """A pool of actors sharing work.

    ``fn(actor, value)`` must call one remote method and return its ObjectRef, e.g.
    ``pool.map(lambda a, v: a.double.remote(v), [1, 2, 3])``.
    """

    def __init__(self, actors):
        self._idle = list(actors)
        self._running = {}          # submission index -> (future, actor)
        self._queued = collections.deque()   # (fn, value) waiting for a free actor
        self._next_index = 0        # index of the next submission
        self._next_ordered = 0      # index get_next returns next

    # ------------------------------------------------------------- submitting

    def submit(self, fn, value):
        """Run ``fn(actor, value)`` on an idle actor now, or once one is free."""
        if self._idle:
            actor = self._idle.pop()
            future = fn(actor, value)
            self._running[self._next_index] = (future, actor)
            self._next_index += 1
        else:
            self._queued.append((fn, value))

    def map(self, fn, values):
        """Submit ``fn`` over ``values``; a generator of the results in order."""
        return self._map(fn, values, self.get_next)

    def map_unordered(self, fn, values):
        """Submit ``fn`` over ``values``; a generator of the results as they finish."""
        return self._map(fn, values, self.get_next_unordered)

    def _map(self, fn, values, next_result):
        self._discard_outstanding()
        for value in values:
            self.submit(fn, value)

        def results():
            while self.has_next():
                yield next_result()
        return results()

    def _discard_outstanding(self):
        """A new map starts from a clean pool: results nobody took are dropped.

        (Their actors may still be busy with them; the new work queues behind.)
        """
        self._queued.clear()
        for index in sorted(self._running):
            self._finish(index)
        self._next_ordered = self._next_index

    # ---------------------------------------------------------------- results

    def has_next(self):
        """Whether any submitted work has a result not yet returned."""
        return bool(self._running)

    def get_next(self, timeout=None, ignore_if_timedout=False):
        """The result of the oldest submission not returned yet (submission order).

        Raises TimeoutError if it is not ready within ``timeout`` seconds; with
        ``ignore_if_timedout=True`` that submission is then given up.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        while self._next_ordered < self._next_index and self._next_ordered not in self._running:
            self._next_ordered += 1      # taken already by get_next_unordered
        if self._next_ordered >= self._next_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        index = self._next_ordered
        future, _ = self._running[index]
        if timeout is not None:
            refs = _refs_of(future)
            ready, _ = api.wait(refs, num_returns=len(refs), timeout=timeout)
            if len(ready) < len(refs):
                if not ignore_if_timedout:
                    raise TimeoutError(f"Timed out waiting for the result of submission {index}")
                self._finish(index)
                raise TimeoutError(f"Timed out waiting for the result of submission {index}; "
                                   f"it has been ignored")
        self._finish(index)
        return api.get(future)

    def get_next_unordered(self, timeout=None, ignore_if_timedout=False):
        """The result of any finished submission (whichever finishes first).

        Raises TimeoutError if none is ready within ``timeout`` seconds.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        by_ref = {_refs_of(future)[0]: index for index, (future, _) in self._running.items()}
        ready, _ = api.wait(list(by_ref), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError("Timed out waiting for a result")
        index = by_ref[ready[0]]
        future, _ = self._running[index]
        self._finish(index)
        # As Ray: get_next continues after the newest result taken out of order.
        self._next_ordered = max(self._next_ordered, index + 1)
        return api.get(future)

    def _finish(self, index):
        """A submission's result is taken: its actor is free for the next queued work."""
        _, actor = self._running.pop(index)
        if index == self._next_ordered:
            self._next_ordered += 1
        self._return_actor(actor)

    def _return_actor(self, actor):
        self._idle.append(actor)
        if self._queued:
            self.submit(*self._queued.popleft())

    # ----------------------------------------------------------------- actors

    def has_free(self):
        """Whether an actor is idle (and no queued work is waiting for one)."""
        return bool(self._idle) and not self._queued

    def pop_idle(self):
        """Take an idle actor out of the pool (None if there is none)."""
        if self.has_free():
            return self._idle.pop()
        return None

    def push(self, actor):
        """Add an actor to the pool (it picks up queued work at once)."""
        busy = [a for _, a in self._running.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
