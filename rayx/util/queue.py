"""``rayx.util.queue.Queue``: a first-in first-out queue shared by tasks and actors, as Ray's.

The items live in one async actor (an ``asyncio.Queue`` on its event loop), so
a blocked ``put`` or ``get`` waits inside the actor without holding a thread,
and any process holding the Queue (it pickles as its actor handle) can use it.
``Empty`` and ``Full`` are subclasses of the standard library's
``queue.Empty`` and ``queue.Full``.
"""
import asyncio
import queue as _stdlib_queue

from rayx import api


class Empty(_stdlib_queue.Empty):
    """``get`` found no item (non-blocking, or within its timeout)."""


class Full(_stdlib_queue.Full):
    """``put`` found no free slot (non-blocking, or within its timeout)."""


class _QueueActor:
    """The actor holding the items; its methods run as asyncio tasks on one loop."""

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self.queue = asyncio.Queue(maxsize)

    def qsize(self):
        return self.queue.qsize()

    def empty(self):
        return self.queue.empty()

    def full(self):
        return self.queue.full()

    async def put(self, item, timeout=None):
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full from None

    async def put_batch(self, items, timeout=None):
        for item in items:
            await self.put(item, timeout)

    async def get(self, timeout=None):
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    def put_nowait(self, item):
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full from None

    def put_nowait_batch(self, items):
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise Full(f"Cannot add {len(items)} items to queue of size {self.queue.qsize()} "
                       f"and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self):
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty from None

    def get_nowait_batch(self, num_items):
        if num_items > self.queue.qsize():
            raise Empty(f"Cannot get {num_items} items from queue of size {self.queue.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]


def _unwrap(ref):
    """The value of ``ref``; an Empty/Full raised in the actor is re-raised as itself."""
    try:
        return api.get(ref)
    except (Empty, Full):
        raise
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (Empty, Full)):
            raise type(cause)(*cause.args) from None
        raise


class Queue:
    """A FIFO queue backed by an actor; ``maxsize <= 0`` means unbounded.

    ``actor_options`` are passed to the queue actor's ``.options(...)``
    (e.g. ``{"num_cpus": 0, "name": "jobs"}``).
    """

    def __init__(self, maxsize=0, hint_type_=None, actor_options=None):
        from rayx.actor import ActorClass
        self.maxsize = maxsize
        options = {"num_cpus": 0}
        options.update(actor_options or {})
        self.actor = ActorClass(_QueueActor, {}).options(**options).remote(maxsize)

    def __len__(self):
        return self.size()

    def size(self):
        """The number of items in the queue."""
        return api.get(self.actor.qsize.remote())

    def qsize(self):
        """The number of items in the queue."""
        return self.size()

    def empty(self):
        """Whether the queue holds no item."""
        return api.get(self.actor.empty.remote())

    def full(self):
        """Whether the queue holds ``maxsize`` items."""
        return api.get(self.actor.full.remote())

    def put(self, item, block=True, timeout=None):
        """Add an item; block until a slot is free (at most ``timeout`` s, then Full)."""
        if not block:
            return _unwrap(self.actor.put_nowait.remote(item))
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        _unwrap(self.actor.put.remote(item, timeout))

    async def put_async(self, item, block=True, timeout=None):
        """``put`` from async code (``await queue.put_async(x)``)."""
        if not block:
            ref = self.actor.put_nowait.remote(item)
        else:
            if timeout is not None and timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            ref = self.actor.put.remote(item, timeout)
        try:
            await ref
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (Empty, Full)):
                raise type(cause)(*cause.args) from None
            raise

    def get(self, block=True, timeout=None):
        """Remove and return the first item; block until there is one (at most ``timeout`` s, then Empty)."""
        if not block:
            return _unwrap(self.actor.get_nowait.remote())
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        return _unwrap(self.actor.get.remote(timeout))

    async def get_async(self, block=True, timeout=None):
        """``get`` from async code (``await queue.get_async()``)."""
        if not block:
            ref = self.actor.get_nowait.remote()
        else:
            if timeout is not None and timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            ref = self.actor.get.remote(timeout)
        try:
            return await ref
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (Empty, Full)):
                raise type(cause)(*cause.args) from None
            raise

    def put_nowait(self, item):
        """Add an item if a slot is free, else raise Full."""
        return self.put(item, block=False)

    def put_nowait_batch(self, items):
        """Add all ``items`` at once, or none of them (Full) if they do not all fit."""
        if not isinstance(items, (list, tuple)):
            raise TypeError("Argument 'items' must be a list or tuple")
        _unwrap(self.actor.put_nowait_batch.remote(list(items)))

    def get_nowait(self):
        """Remove and return the first item if there is one, else raise Empty."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items):
        """Remove and return ``num_items`` items, or none (Empty) if there are fewer."""
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError("'num_items' must be a non-negative integer")
        return _unwrap(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force=False, grace_period_s=5):
        """End the queue's actor (its items are lost)."""
        if self.actor is None:
            return
        if force:
            api.kill(self.actor, no_restart=True)
        else:
            done = self.actor.__ray_terminate__.remote()
            ready, _ = api.wait([done], timeout=grace_period_s)
            if not ready:
                api.kill(self.actor, no_restart=True)
        self.actor = None
