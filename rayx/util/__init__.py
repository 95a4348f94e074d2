"""Utilities on top of the core API, as in Ray's ``ray.util``."""
from rayx.util import scheduling_strategies  # noqa: F401
from rayx.util.actor_pool import ActorPool  # noqa: F401
from rayx.util import queue  # noqa: F401  (rayx.util.queue.Queue)
from rayx.util import state  # noqa: F401

__all__ = ["ActorPool", "queue", "scheduling_strategies", "state"]
