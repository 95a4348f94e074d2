"""Scheduling strategies a task or actor can ask for, as in Ray's ``ray.util.scheduling_strategies``."""


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id`` (hex string); with ``soft=True`` run elsewhere if it cannot."""

    def __init__(self, node_id, soft, _spill_on_unavailable=False, _fail_on_unavailable=False):
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self):
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


__all__ = ["NodeAffinitySchedulingStrategy"]
