"""Actors on a raylet: their life cycle, their workers, and the ordering of calls.

Creating an actor is a task scheduled like any other; the worker it runs on
then belongs to the actor until it dies. The actor keeps only its lifetime
resources (by default none: 1 CPU to be placed, 0 while alive, as Ray).

Calls are ordered per caller: each caller numbers its calls 1, 2, 3... and a
call is sent to the actor's worker only once every earlier call of that
caller has been sent and its own arguments are ready, so calls whose
arguments become ready out of order still run in submission order.

Direct calls: a caller on this node asks (``direct_probe``) where the actor
takes calls; once the actor is alive here and none of that caller's calls
are left in the queues below, the answer is the actor worker's own socket,
and from then on the caller sends its calls there and the worker registers
their results here (``rayx.runtime.actor_calls``). Calls of callers on other nodes,
and calls to actors that are dead or elsewhere, keep going through here.

When the actor's process dies it is restarted (its constructor re-run with the
original arguments) while ``max_restarts`` allows; calls that were running
are retried when ``max_task_retries`` allows and fail with ActorDiedError
otherwise; calls submitted meanwhile wait for the restart. States and restart
counts are written to the GCS ``actors`` table and published on its channel
(``rayx.gcs.tables``). The death of an actor's worker, and of an actor's
owner, reach this module from ``rayx.raylet.failures``.

Non-detached actors die with their owner: the job's driver, or the worker
process that created them. A call that arrives before its actor's creation
task (another driver resolved the name first) waits for it for a while.
"""
import heapq
import logging
import signal

from rayx import messages
from rayx.runtime import serialization
from rayx.exceptions import ActorDiedError, TaskCancelledError
from rayx.gcs import tables
from rayx.gcs.tables import ACTOR_ALIVE as ALIVE, ACTOR_DEAD as DEAD, ACTOR_PENDING as PENDING, \
    ACTOR_RESTARTING as RESTARTING
from rayx.raylet import tasks as t
from rayx.raylet.resources import fixed_request

logger = logging.getLogger("rayx.raylet")


class CallerQueue:
    """One caller's calls to one actor, released in sequence-number order.

    An incarnation restarted on another node (its node died) cannot know which
    calls the dead one ran: there ``next_seq`` starts unknown, and the first call
    that arrives sets it (a caller's raylet sends its calls in order)."""

    __slots__ = ("next_seq", "heap", "tasks")

    def __init__(self, next_seq=1):
        self.next_seq = next_seq
        self.heap = []
        self.tasks = {}

    def add(self, task):
        seq = task.spec.sequence_number
        if self.next_seq is None:
            self.next_seq = seq
        self.tasks[seq] = task
        heapq.heappush(self.heap, seq)

    def pop_sendable(self):
        """The next call that may go to the actor now, or None."""
        heap = self.heap
        while heap:
            seq = heap[0]
            if seq > self.next_seq:
                return None        # an earlier call of this caller has not arrived yet
            task = self.tasks[seq]
            if task is not None and task.missing:
                return None        # its arguments are not ready; later calls wait behind it
            heapq.heappop(heap)
            del self.tasks[seq]
            if seq >= self.next_seq:
                self.next_seq = seq + 1
            if task is not None:   # None: cancelled, its number is skipped
                return task
        return None

    def drop(self, task):
        """Take out a call not sent yet (rayx.cancel); True if it was here."""
        seq = task.spec.sequence_number
        if self.tasks.get(seq) is not task:
            return False
        self.tasks[seq] = None
        return True

    def all_tasks(self):
        return [task for task in self.tasks.values() if task is not None]


class ActorState:
    __slots__ = ("actor_id", "creation", "state", "worker", "restarts", "callers", "inflight",
                 "lifetime_request", "death_data", "death_reason", "no_restart", "job_id", "owner",
                 "probes")

    def __init__(self, creation_task):
        spec = creation_task.spec
        self.actor_id = spec.actor_id
        self.creation = creation_task
        self.state = PENDING
        self.worker = None
        self.restarts = spec.attempt   # a restart elsewhere (its node died) counts too
        self.callers = {}
        self.inflight = {}
        self.lifetime_request = fixed_request(spec.extra.get("lifetime_resources", {}))
        self.death_data = None
        self.death_reason = ""
        self.no_restart = False
        self.job_id = spec.job_id
        self.owner = creation_task.submitter
        self.probes = []           # direct-call probes not answered yet

    @property
    def spec(self):
        return self.creation.spec

    def new_caller(self):
        """The queue of a caller first heard from now: numbered from 1, unless this
        incarnation took over from one on a dead node (``restarts`` > 0 at creation)."""
        return CallerQueue(None if self.spec.attempt > 0 else 1)

    def restarts_left(self):
        limit = self.spec.max_restarts
        return not self.no_restart and (limit < 0 or self.restarts < limit)


def actor_died(class_name, reason, task):
    """The ActorDiedError a call to a dead actor fails with."""
    return ActorDiedError(f"The actor {class_name} is dead: {reason}.", actor_id=task.spec.actor_id.hex())


# How long a call to an actor this raylet has not heard of waits for the
# actor's creation task to arrive (another driver may have resolved its name
# before the creating driver's submission got here).
UNKNOWN_ACTOR_GRACE = 30.0


class ActorManager:
    def __init__(self, loop, node_id, gcs, gcs_writer, resources, dependencies, results):
        self._loop = loop
        self._node_id = node_id
        self._gcs = gcs
        self._gcs_writer = gcs_writer
        self._resources = resources
        self._dependencies = dependencies
        self._results = results
        self._submit = self._cancel_queued = self._worker_killed = None
        self._actors = {}       # actor id -> ActorState, of the actors this node hosts
        self._unknown = {}      # actor id -> calls that arrived before its creation task

    def connect(self, submit, cancel_queued, worker_killed):
        """The local scheduler's ``submit`` (a restart runs the constructor again) and
        ``cancel_queued`` (a creation not started yet), and ``worker_killed(worker)``
        (failures: handle the death of a worker rayx.kill just killed)."""
        self._submit = submit
        self._cancel_queued = cancel_queued
        self._worker_killed = worker_killed

    def hosts(self, actor_id):
        """Whether the actor lives on this node (or is being created here)."""
        return actor_id in self._actors

    def move_away(self, actor_id):
        """The actor's creation goes to another node: forget it here and return the
        calls queued for it, in submission order (they follow it)."""
        actor = self._actors.pop(actor_id, None)
        if actor is None:
            return []
        self.answer_probes(actor, moved=True)
        calls = []
        for caller in actor.callers.values():
            calls.extend(caller.all_tasks())
        calls.sort(key=lambda call: call.spec.sequence_number)
        return calls

    # ------------------------------------------------------------ creation

    def creation_submitted(self, task):
        actor = self._actors.get(task.spec.actor_id)
        if actor is None:
            actor = self._actors[task.spec.actor_id] = ActorState(task)
            # The first record is written at once (not batched), so that the
            # actor's own code and any process given its handle can resolve it.
            self._publish(actor, sync=True)
            for call in self._unknown.pop(task.spec.actor_id, ()):
                self.submit_call(call)
        else:
            actor.creation = task
            self._publish(actor)

    def placed(self, actor_id, worker):
        actor = self._actors.get(actor_id)
        if actor is not None:
            actor.worker = worker

    def creation_done(self, task, worker, results):
        """The constructor returned (or raised: then an ACTOR_EXIT follows)."""
        actor = self._actors.get(task.spec.actor_id)
        self._results.finish(task, results)
        if actor is None or actor.state == DEAD:
            return
        if results and results[0][4]:
            actor.death_data = results[0][1]
            return  # the worker reports ACTOR_EXIT with the ActorDiedError and exits
        # Keep only the lifetime resources from now on.
        resources = self._resources
        resources.release_worker(worker)
        worker.allocation = resources.try_acquire(actor.lifetime_request)
        if worker.allocation is None:   # cannot happen unless lifetime > placement
            worker.allocation = resources.try_acquire({})
        actor.worker = worker
        actor.state = ALIVE
        worker.display_name = actor.spec.actor_class_name()
        self._publish(actor)
        for caller in actor.callers.values():
            self._pump(actor, caller)
        self.answer_probes(actor)

    # --------------------------------------------------------------- calls

    def submit_call(self, task):
        spec = task.spec
        actor = self._actors.get(spec.actor_id)
        if actor is None:
            self._hold_unknown(task)
            return
        if actor.state == DEAD:
            self._reject(actor, task, actor.death_reason or "it has exited")
            return
        caller = actor.callers.get(spec.caller_id)
        if caller is None:
            caller = actor.callers[spec.caller_id] = actor.new_caller()
        caller.add(task)
        task.on_ready = lambda _task, actor=actor, caller=caller: self._pump(actor, caller)
        self._dependencies.track(task)
        if not task.missing:
            self._pump(actor, caller)

    def _hold_unknown(self, task):
        actor_id = task.spec.actor_id
        waiting = self._unknown.get(actor_id)
        if waiting is None:
            waiting = self._unknown[actor_id] = []
            self._loop.call_later(UNKNOWN_ACTOR_GRACE, self._give_up_unknown, actor_id)
        waiting.append(task)

    def _give_up_unknown(self, actor_id):
        for task in self._unknown.pop(actor_id, ()):
            self._reject(None, task, "no such actor on this node (its creation never arrived)")

    def _reject(self, actor, task, reason):
        """Fail a call that never got queued (its inputs are held first: finishing
        releases them)."""
        self._dependencies.hold_inputs(task)
        self._fail_call(actor, task, reason)

    def cancel_call(self, task):
        """rayx.cancel of a call that came through here. One not sent to the actor yet is
        dropped (TaskCancelledError; the caller's later calls do not wait for it); a
        running one is told to the actor's worker, which cancels it if the actor is async."""
        spec = task.spec
        actor = self._actors.get(spec.actor_id)
        if actor is None:
            waiting = self._unknown.get(spec.actor_id, [])
            if task in waiting:
                waiting.remove(task)
                self._dependencies.hold_inputs(task)
                self._results.fail(task, TaskCancelledError.before_it_ran(spec))
            return
        if spec.task_id in actor.inflight:
            actor.worker.conn.send(messages.CANCEL(spec.task_id))
            return
        caller = actor.callers.get(spec.caller_id)
        if caller is not None and caller.drop(task):
            self._dependencies.forget(task)
            self._results.fail(task, TaskCancelledError.before_it_ran(spec))
            self._pump(actor, caller)
            if actor.probes:
                self.answer_probes(actor)

    def _pump(self, actor, caller):
        if actor.state != ALIVE:
            return
        dependencies = self._dependencies
        worker = actor.worker
        while True:
            task = caller.pop_sendable()
            if task is None:
                return
            error = dependencies.error_results(task)
            if error is not None:
                self._results.finish(task, error)
                if actor.probes:
                    self.answer_probes(actor)
                continue
            task.state = t.RUNNING
            task.worker = worker
            actor.inflight[task.spec.task_id] = task
            worker.conn.send(messages.EXECUTE(task.spec, dependencies.argument_values(task), []))

    def call_done(self, worker, task_id, results, retryable):
        actor = self._actors.get(worker.actor_id)
        if actor is None:
            return
        task = actor.inflight.pop(task_id, None)
        if task is None:
            return
        if retryable and task.spec.take_retry():
            self._requeue(actor, task)
            return
        self._results.finish(task, results)
        if actor.probes:
            self.answer_probes(actor)

    def _requeue(self, actor, task):
        task.state = t.READY
        caller = actor.callers.get(task.spec.caller_id)
        if caller is None:
            caller = actor.callers[task.spec.caller_id] = actor.new_caller()
        caller.add(task)
        self._pump(actor, caller)

    # -------------------------------------------------------- direct calls

    def direct_probe(self, conn, request_id, actor_id, caller_id, broken_path):
        """Where may this caller send its calls to the actor directly? Answered, maybe
        later, with ("direct", socket path) once the actor is alive here at a path
        other than ``broken_path`` (the one the caller just lost) and none of the
        caller's calls are left here; ("raylet", "") when the actor is elsewhere or
        dead (its calls then come here, to be forwarded or rejected)."""
        actor = self._actors.get(actor_id)
        if actor is None:
            conn.send(messages.REPLY(request_id, True, ("raylet", "")))
            return
        actor.probes.append((conn, request_id, caller_id, broken_path))
        self.answer_probes(actor)

    def answer_probes(self, actor, moved=False):
        if not actor.probes:
            return
        waiting = []
        for probe in actor.probes:
            conn, request_id, caller_id, broken_path = probe
            answer = ("raylet", "") if moved else self._probe_answer(actor, caller_id, broken_path)
            if answer is None:
                waiting.append(probe)
            elif not conn.transport.is_closing():
                conn.send(messages.REPLY(request_id, True, answer))
        actor.probes = waiting

    @staticmethod
    def _probe_answer(actor, caller_id, broken_path):
        if actor.state == DEAD:
            return ("raylet", "")
        if actor.state != ALIVE:
            return None                      # answered once it is alive (or dead)
        path = actor.worker.direct_path
        if not path:
            return ("raylet", "")
        if path == broken_path:
            return None                      # its death is not handled here yet
        caller = actor.callers.get(caller_id)
        if caller is not None and caller.tasks:
            return None                      # calls of this caller still queued here
        for task in actor.inflight.values():
            if task.spec.caller_id == caller_id:
                return None
        return ("direct", path)

    # --------------------------------------------------------------- death

    def actor_exit(self, worker, actor_id, reason, death_data):
        """The actor ended itself (exit_actor, __ray_terminate__, constructor error)."""
        actor = self._actors.get(actor_id)
        if actor is None:
            return
        actor.no_restart = True
        actor.death_reason = reason
        if death_data:
            actor.death_data = death_data
        self._mark_dead(actor)

    def worker_died(self, worker, exit_code):
        """The actor's worker process died: restart the actor if its restarts allow
        (retrying or failing the calls that were running), else it is dead."""
        actor = self._actors.get(worker.actor_id)
        if actor is None or actor.state == DEAD:
            return
        if actor.worker is not None and actor.worker is not worker:
            return      # a previous incarnation's process, already handled
        actor.worker = None
        if not actor.death_reason:
            actor.death_reason = (f"the actor's worker process (pid={worker.pid}) died unexpectedly "
                                  f"(exit code {exit_code})")
        if actor.restarts_left():
            actor.restarts += 1
            actor.state = RESTARTING
            self._publish(actor)
            for task in list(actor.inflight.values()):
                if task.spec.take_retry():
                    self._requeue(actor, task)
                else:
                    self._fail_call(actor, task, actor.death_reason + "; the call was running and "
                                    "max_task_retries does not allow retrying it")
            actor.inflight.clear()
            actor.death_reason = ""
            creation = actor.creation
            creation.spec.attempt += 1
            self._submit(creation.spec, creation.submitter, hold_inputs=False)
        else:
            self._mark_dead(actor)

    def kill(self, actor_id, no_restart):
        actor = self._actors.get(actor_id)
        if actor is None:
            raise ValueError(f"no actor {actor_id.hex()} on this node")
        if actor.state == DEAD:
            return False
        if no_restart:
            actor.no_restart = True
        if not actor.death_reason:
            actor.death_reason = "the actor was killed by rayx.kill()"
        worker = actor.worker
        if worker is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
            # Handle the death now rather than when the socket closes, so that a
            # call submitted after kill() returns never goes to the dead process.
            self._worker_killed(worker)
        elif actor.state in (PENDING, RESTARTING):
            self._cancel_queued(actor.creation)
            actor.no_restart = True
            self._mark_dead(actor)
        return True

    def job_finished(self, job_id):
        """A driver left: its non-detached actors die with it."""
        for actor in list(self._actors.values()):
            if actor.job_id == job_id and not actor.spec.detached and actor.state != DEAD:
                actor.death_reason = "the actor's owner (its driver) exited"
                self.kill(actor.actor_id, no_restart=True)

    def owner_died(self, worker):
        """A worker process died: the non-detached actors it created die with it (as Ray)."""
        conn = worker.conn
        if conn is None:
            return
        for actor in list(self._actors.values()):
            if actor.owner is conn and not actor.spec.detached and actor.state != DEAD:
                actor.death_reason = (f"the actor's owner (the worker process pid={worker.pid} "
                                      f"that created it) died")
                self.kill(actor.actor_id, no_restart=True)

    def _mark_dead(self, actor):
        actor.state = DEAD
        self._publish(actor)
        self.answer_probes(actor)
        for task in list(actor.inflight.values()):
            self._fail_call(actor, task, actor.death_reason)
        actor.inflight.clear()
        for caller in actor.callers.values():
            for task in caller.all_tasks():
                self._dependencies.forget(task)
                self._fail_call(actor, task, actor.death_reason)
        actor.callers.clear()
        if actor.worker is not None:
            self._resources.release_worker(actor.worker)
        self._dependencies.release_inputs(actor.creation)
        spec = actor.spec
        if spec.actor_name and self._gcs is not None:
            key = tables.named_actor_key(spec.namespace, spec.actor_name)
            try:
                entry = tables.NAMED_ACTORS.get(self._gcs, key)
                if entry and entry.get("actor_id") == actor.actor_id:
                    tables.NAMED_ACTORS.delete(self._gcs, key)
            except Exception:
                logger.exception("removing the name of a dead actor")

    def _fail_call(self, actor, task, reason):
        if actor is not None and actor.death_data and reason == actor.death_reason:
            data = actor.death_data
        else:
            name = actor.spec.actor_class_name() if actor is not None else "unknown"
            data = serialization.serialize_error(actor_died(name, reason, task)).to_bytes()
        self._results.fail_with(task, data)

    def reject_dead(self, task, class_name, reason):
        """Fail a call (its inputs held) to an actor of another node that is dead."""
        self._results.fail(task, actor_died(class_name, reason, task))

    # ----------------------------------------------------------------- gcs

    def _publish(self, actor, sync=False):
        writer = self._gcs_writer
        if writer is None:
            return
        spec = actor.spec
        record = {
            "actor_id": actor.actor_id,
            "state": actor.state,
            "class_name": spec.actor_class_name(),
            "name": spec.actor_name,
            "namespace": spec.namespace,
            "node_id": self._node_id,
            "pid": actor.worker.pid if actor.worker is not None else 0,
            "restarts": actor.restarts,
            "detached": spec.detached,
            "job_id": spec.job_id,
            "methods": spec.extra.get("methods", {}),
            "max_task_retries": spec.max_task_retries,
            "death_reason": actor.death_reason,
            "creation_task_id": spec.task_id,
        }
        if sync and self._gcs is not None:
            try:
                tables.ACTORS.put(self._gcs, actor.actor_id, record)
            except Exception:
                logger.exception("writing the record of actor %s", actor.actor_id.hex())
                tables.ACTORS.put(writer, actor.actor_id, record)
        else:
            tables.ACTORS.put(writer, actor.actor_id, record)
        writer.publish(tables.ACTOR_STATE_CHANNEL, tables.ACTORS.encode(record))
