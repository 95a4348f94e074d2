"""Task events: what each worker ran, when, where, and how it ended.

The GCS ``tasks`` table holds the lineage of every task (its spec) but no
state; the raylet writes the specs of the tasks it receives, and a leased
worker (``rayx.runtime.leased_tasks``) those of the tasks it starts, through
here, and the object-table rows of their results. A worker records one event per task, actor constructor or actor call it
runs -- task id, name, job, actor, worker pid, node, start and end times,
FINISHED or FAILED (with the exception's type) -- into the ``task_events``
table: one row per flush (key = worker id + batch number, value = the
worker's common fields and a list of event tuples), so a stream of calls
costs one GCS write per 50 ms, not one per call. Readers keep a task's
latest event (``latest_events``: a retry's wins). The
state API (``rayx.util.state.list_tasks``), ``rayx list tasks`` and
``rayx timeline`` read them.

Cost on the task's critical path: ``record`` builds one tuple and appends it to
a deque (plus, when the flusher is idle, one Event.set). A daemon thread wakes
on the first event after a quiet spell, lets events gather for
``gather_interval`` seconds, encodes them and hands them to a GCS BatchWriter
(made on first use), which sends them as pipelines from its own thread. Events
still buffered when a worker is killed are lost; a worker that exits by itself
(EXIT from the raylet, an actor exiting) flushes first.
"""
import collections
import os
import threading
import time

from rayx.gcs import tables

FINISHED = "FINISHED"
FAILED = "FAILED"

now = time.time       # the clock of task events (wall time: events of all nodes are compared)


class TaskEvents:
    def __init__(self, core, gather_interval=0.05):
        self._core = core
        self.gather_interval = gather_interval
        self._events = collections.deque()
        self._lineage = collections.deque()   # specs of leased tasks, for the "tasks" table
        self._objects = collections.deque()   # results of leased tasks, for the "objects" table
        self._armed = False             # the flusher has been woken for the events buffered
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._thread = None
        self._writer = None
        self._common = None
        self.recorded = 0               # events handed to the GCS writer
        self._batches = 0               # rows written (one per flush)

    def record(self, spec, start, error=None):
        """One task ended; ``error`` is the class of the exception it raised, or None.

        Hot path: keep it cheap (a tuple appended to a deque)."""
        self._events.append((spec.task_id, spec.function_name, spec.job_id, spec.actor_id,
                             spec.task_type, spec.attempt, start, now(),
                             None if error is None else error.__name__))
        if not self._armed:
            self._arm()

    def started(self, spec):
        """A task that reached us without the raylet (a leased task) starts: its spec goes
        to the GCS lineage table (the raylet writes those of the tasks it receives)."""
        self._lineage.append(spec)
        if not self._armed:
            self._arm()

    def made_objects(self, results):
        """A leased task's results, for the GCS object table (where they were made, their
        size), as the raylet records the results of the tasks it runs."""
        self._objects.extend(results)

    def _arm(self):
        """Wake the flusher for what was just buffered (starting it the first time)."""
        self._armed = True
        if self._thread is None:
            self._start()
        self._wake.set()

    def _start(self):
        with self._drain_lock:
            if self._thread is None:         # threaded actors may race here
                thread = threading.Thread(target=self._run, name="rayx-task-events", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self.gather_interval)     # let a batch gather
            self._armed = False
            try:
                self._drain()
            except Exception:                    # never let the thread die; events are best effort
                pass

    def _drain(self):
        """Encode every buffered event and hand it to the batch writer."""
        events = self._events
        lineage = self._lineage
        if not events and not lineage:
            return
        with self._drain_lock:
            if self._writer is None:
                core = self._core
                info = core.node_info or {}
                self._common = {"node_id": core.node_id, "node_ip_address": info.get("node_ip_address", ""),
                                "worker_id": core.worker_id, "pid": os.getpid()}
                self._writer = core.gcs.batch_writer()
            writer = self._writer
            node_id = self._core.node_id
            while lineage:
                spec = lineage.popleft()
                tables.TASKS.put(writer, spec.task_id, tables.Lineage(node_id, spec))
            objects = self._objects
            while objects:
                object_id, _, size, _, _ = objects.popleft()
                tables.OBJECTS.put(writer, object_id, tables.ObjectLocation(node_id, size))
            if events:
                batch = []
                while events:
                    batch.append(events.popleft())
                self._batches += 1
                key = self._core.worker_id + self._batches.to_bytes(8, "big")
                tables.TASK_EVENTS.put(writer, key, {"common": self._common, "events": batch})
                self.recorded += len(batch)

    def flush(self, timeout=2.0):
        """Write every buffered event now (before the process exits); never raises."""
        try:
            self._drain()
            if self._writer is not None:
                self._writer.flush(timeout)
        except Exception:
            pass


def decode_events(row):
    """The event dicts in one row of the table (task_id, name, job_id, actor_id,
    task_type, attempt, start_time, end_time, state, error_type, and the worker's
    node_id, node_ip_address, worker_id, pid)."""
    common = row["common"]
    decoded = []
    for (task_id, name, job_id, actor_id, task_type, attempt, start, end,
         error_type) in row["events"]:
        event = dict(common)
        event.update(task_id=task_id, name=name, job_id=job_id, actor_id=actor_id,
                     task_type=task_type, attempt=attempt, start_time=start, end_time=end,
                     state=FINISHED if error_type is None else FAILED, error_type=error_type or "")
        decoded.append(event)
    return decoded


def latest_events(rows):
    """{task id: its latest event} over rows of the table (a retry's event wins)."""
    latest = {}
    for row in rows:
        try:
            events = decode_events(row)
        except Exception:
            continue
        for event in events:
            previous = latest.get(event["task_id"])
            if previous is None or (event["attempt"], event["end_time"]) >= \
                    (previous["attempt"], previous["end_time"]):
                latest[event["task_id"]] = event
    return latest
