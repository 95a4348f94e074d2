"""How long each function runs, and when a short task may queue on a worker
behind others: the one rule the raylet's dispatcher (tasks it sends to its
workers when every CPU is busy) and a caller's leased workers
(``rayx.runtime`` sends to workers lent to it) both follow, each with its own
limits.

A worker goes from one queued task to the next without a round trip, which is
most of the cost of a task that runs for microseconds. But a task queued
behind a long one waits for it, so only functions measured to be short are
queued, and never behind a task of unknown or long run time.
"""

SMOOTHING = 0.2   # weight of the newest measurement in the running average


class RunTimes:
    """Running average of the seconds each function (by function id) takes per run."""

    __slots__ = ("_seconds", "get")

    def __init__(self):
        self._seconds = {}
        # get(function_id): the average, or None if the function never ran here. The
        # dict's own method: asked once per task on the dispatch and lease paths.
        self.get = self._seconds.get

    def record(self, function_id, seconds):
        previous = self._seconds.get(function_id)
        self._seconds[function_id] = seconds if previous is None else \
            (1 - SMOOTHING) * previous + SMOOTHING * seconds


class PipelineRule:
    """When a worker takes one more task while others are in flight on it.

    ``short_seconds``: only functions measured to run shorter than this are
    queued behind others (``expected`` gives None for the rest, which run
    alone). ``budget_seconds``: the expected run time of the tasks in flight on
    one worker stays within this. ``max_depth``: at most this many in flight.
    """

    __slots__ = ("short_seconds", "budget_seconds", "max_depth")

    def __init__(self, short_seconds, budget_seconds, max_depth):
        self.short_seconds = short_seconds
        self.budget_seconds = budget_seconds
        self.max_depth = max_depth

    def expected(self, run_times, function_id):
        """The seconds a task of this function is expected to take if it may queue
        behind others, else None (never measured, or not short)."""
        seconds = run_times.get(function_id)
        return seconds if seconds is not None and seconds < self.short_seconds else None

    def has_room(self, in_flight, load, alone, expected):
        """May a task expected to take ``expected`` seconds (None: runs alone) join a
        worker with ``in_flight`` tasks whose expected seconds sum to ``load``
        (``alone``: one of them must run alone)?"""
        if not in_flight:
            return True
        if alone or expected is None:
            return False
        return load + expected <= self.budget_seconds and in_flight < self.max_depth
