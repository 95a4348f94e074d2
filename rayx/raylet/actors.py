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
counts are written to the GCS ``actors`` table and published on the
``actor_state`` channel.

Non-detached actors die with their owner: the job's driver, or the worker
process that created them. A call that arrives before its actor's creation
task (another driver resolved the name first) waits for it for a while.
"""
import heapq
import logging
import signal

from rayx import messages
from rayx.runtime import serialization
from rayx._core import codec
from rayx.exceptions import ActorDiedError, TaskCancelledError
from rayx.raylet import tasks as t
from rayx.raylet.resources import fixed_request

logger = logging.getLogger("rayx.raylet")

PENDING = "PENDING_CREATION"
ALIVE = "ALIVE"
RESTARTING = "RESTARTING"
DEAD = "DEAD"


class CallerQueue:
    """One caller's calls to one actor, released in sequence-number order."""

    __slots__ = ("next_seq", "heap", "tasks")

    def __init__(self):
        self.next_seq = 1
        self.heap = []
        self.tasks = {}

    def add(self, task):
        seq = task.spec.sequence_number
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
        self.restarts = 0
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

    def restarts_left(self):
        limit = self.spec.max_restarts
        return not self.no_restart and (limit < 0 or self.restarts < limit)


# How long a call to an actor this raylet has not heard of waits for the
# actor's creation task to arrive (another driver may have resolved its name
# before the creating driver's submission got here).
UNKNOWN_ACTOR_GRACE = 30.0


class ActorManager:
    def __init__(self, raylet):
        self.raylet = raylet
        self.actors = {}
        self.unknown = {}      # actor id -> calls that arrived before its creation task

    # ------------------------------------------------------------ creation

    def creation_submitted(self, task):
        actor = self.actors.get(task.spec.actor_id)
        if actor is None:
            actor = self.actors[task.spec.actor_id] = ActorState(task)
            # The first record is written at once (not batched), so that the
            # actor's own code and any process given its handle can resolve it.
            self._publish(actor, sync=True)
            for call in self.unknown.pop(task.spec.actor_id, ()):
                self.submit_call(call)
        else:
            actor.creation = task
            self._publish(actor)

    def placed(self, actor_id, worker):
        actor = self.actors.get(actor_id)
        if actor is not None:
            actor.worker = worker

    def creation_done(self, task, worker, results):
        """The constructor returned (or raised: then an ACTOR_EXIT follows)."""
        actor = self.actors.get(task.spec.actor_id)
        raylet = self.raylet
        raylet.finish_task(task, results)
        if actor is None or actor.state == DEAD:
            return
        if results and results[0][4]:
            actor.death_data = results[0][1]
            return  # the worker reports ACTOR_EXIT with the ActorDiedError and exits
        # Keep only the lifetime resources from now on.
        raylet.release_worker_resources(worker)
        worker.allocation = raylet.resources.try_acquire(actor.lifetime_request)
        if worker.allocation is None:   # cannot happen unless lifetime > placement
            worker.allocation = raylet.resources.try_acquire({})
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
        actor = self.actors.get(spec.actor_id)
        if actor is None:
            self._hold_unknown(task)
            return
        if actor.state == DEAD:
            self._reject(actor, task, actor.death_reason or "it has exited")
            return
        caller = actor.callers.get(spec.caller_id)
        if caller is None:
            caller = actor.callers[spec.caller_id] = CallerQueue()
        caller.add(task)
        task.on_ready = lambda _task, actor=actor, caller=caller: self._pump(actor, caller)
        self.raylet.track_dependencies(task)
        if not task.missing:
            self._pump(actor, caller)

    def _hold_unknown(self, task):
        actor_id = task.spec.actor_id
        waiting = self.unknown.get(actor_id)
        if waiting is None:
            waiting = self.unknown[actor_id] = []
            self.raylet.loop.call_later(UNKNOWN_ACTOR_GRACE, self._give_up_unknown, actor_id)
        waiting.append(task)

    def _give_up_unknown(self, actor_id):
        for task in self.unknown.pop(actor_id, ()):
            self._reject(None, task, "no such actor on this node (its creation never arrived)")

    def _reject(self, actor, task, reason):
        """Fail a call that never got queued."""
        self._hold_inputs(task)
        self._fail_call(actor, task, reason)

    def _hold_inputs(self, task):
        """For a call that never got queued, before it fails: finishing releases them."""
        objects = self.raylet.objects
        for object_id in task.deps:
            objects.incref(object_id)
        for object_id in task.spec.nested_refs:
            objects.incref(object_id)

    def cancel_call(self, task):
        """rayx.cancel of a call that came through here. One not sent to the actor yet is
        dropped (TaskCancelledError; the caller's later calls do not wait for it); a
        running one is told to the actor's worker, which cancels it if the actor is async."""
        spec = task.spec
        actor = self.actors.get(spec.actor_id)
        if actor is None:
            waiting = self.unknown.get(spec.actor_id, [])
            if task in waiting:
                waiting.remove(task)
                self._hold_inputs(task)
                self.raylet.fail_task(task, TaskCancelledError.before_it_ran(spec))
            return
        if spec.task_id in actor.inflight:
            actor.worker.conn.send(messages.CANCEL(spec.task_id))
            return
        caller = actor.callers.get(spec.caller_id)
        if caller is not None and caller.drop(task):
            self.raylet.forget_dependencies(task)
            self.raylet.fail_task(task, TaskCancelledError.before_it_ran(spec))
            self._pump(actor, caller)
            if actor.probes:
                self.answer_probes(actor)

    def _pump(self, actor, caller):
        if actor.state != ALIVE:
            return
        raylet = self.raylet
        worker = actor.worker
        while True:
            task = caller.pop_sendable()
            if task is None:
                return
            error = raylet.dependency_error(task)
            if error is not None:
                raylet.finish_task(task, error)
                if actor.probes:
                    self.answer_probes(actor)
                continue
            task.state = t.RUNNING
            task.worker = worker
            actor.inflight[task.spec.task_id] = task
            worker.conn.send(messages.EXECUTE(task.spec, raylet.argument_values(task), []))

    def call_done(self, worker, task_id, results, retryable):
        actor = self.actors.get(worker.actor_id)
        if actor is None:
            return
        task = actor.inflight.pop(task_id, None)
        if task is None:
            return
        if retryable and task.spec.take_retry():
            self._requeue(actor, task)
            return
        self.raylet.finish_task(task, results)
        if actor.probes:
            self.answer_probes(actor)

    def _requeue(self, actor, task):
        task.state = t.READY
        caller = actor.callers.get(task.spec.caller_id)
        if caller is None:
            caller = actor.callers[task.spec.caller_id] = CallerQueue()
        caller.add(task)
        self._pump(actor, caller)

    # -------------------------------------------------------- direct calls

    def direct_probe(self, conn, request_id, actor_id, caller_id, broken_path):
        """Where may this caller send its calls to the actor directly? Answered, maybe
        later, with ("direct", socket path) once the actor is alive here at a path
        other than ``broken_path`` (the one the caller just lost) and none of the
        caller's calls are left here; ("raylet", "") when the actor is elsewhere or
        dead (its calls then come here, to be forwarded or rejected)."""
        actor = self.actors.get(actor_id)
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
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        actor.no_restart = True
        actor.death_reason = reason
        if death_data:
            actor.death_data = death_data
        self._mark_dead(actor)

    def worker_died(self, worker, exit_code):
        actor = self.actors.get(worker.actor_id)
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
            self.raylet.submit(creation.spec, creation.submitter, hold_inputs=False)
        else:
            self._mark_dead(actor)

    def kill(self, actor_id, no_restart):
        actor = self.actors.get(actor_id)
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
            self.raylet._worker_gone(worker, "was killed")
        elif actor.state in (PENDING, RESTARTING):
            self.raylet.cancel_queued(actor.creation)
            actor.no_restart = True
            self._mark_dead(actor)
        return True

    def job_finished(self, job_id):
        """A driver left: its non-detached actors die with it."""
        for actor in list(self.actors.values()):
            if actor.job_id == job_id and not actor.spec.detached and actor.state != DEAD:
                actor.death_reason = "the actor's owner (its driver) exited"
                self.kill(actor.actor_id, no_restart=True)

    def owner_died(self, worker):
        """A worker process died: the non-detached actors it created die with it (as Ray)."""
        conn = worker.conn
        if conn is None:
            return
        for actor in list(self.actors.values()):
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
                self.raylet.forget_dependencies(task)
                self._fail_call(actor, task, actor.death_reason)
        actor.callers.clear()
        if actor.worker is not None:
            self.raylet.release_worker_resources(actor.worker)
        self.raylet.release_inputs(actor.creation)
        spec = actor.spec
        if spec.actor_name and self.raylet.gcs is not None:
            key = f"{spec.namespace}\x00{spec.actor_name}".encode()
            try:
                entry = self.raylet.gcs.get("named_actors", key)
                if entry and codec.loads(entry).get("actor_id") == actor.actor_id:
                    self.raylet.gcs.delete("named_actors", key)
            except Exception:
                logger.exception("removing the name of a dead actor")

    def _fail_call(self, actor, task, reason):
        if actor is not None and actor.death_data and reason == actor.death_reason:
            data = actor.death_data
        else:
            name = actor.spec.actor_class_name() if actor is not None else "unknown"
            error = ActorDiedError(f"The actor {name} is dead: {reason}.",
                                   actor_id=task.spec.actor_id.hex())
            data = serialization.serialize_error(error).to_bytes()
        self.raylet.finish_task(task, [(oid, data, len(data), (), True) for oid in task.spec.return_ids()])

    # ----------------------------------------------------------------- gcs

    def _publish(self, actor, sync=False):
        raylet = self.raylet
        if raylet.gcs_writer is None:
            return
        spec = actor.spec
        record = {
            "actor_id": actor.actor_id,
            "state": actor.state,
            "class_name": spec.actor_class_name(),
            "name": spec.actor_name,
            "namespace": spec.namespace,
            "node_id": raylet.node_id,
            "pid": actor.worker.pid if actor.worker is not None else 0,
            "restarts": actor.restarts,
            "detached": spec.detached,
            "job_id": spec.job_id,
            "methods": spec.extra.get("methods", {}),
            "max_task_retries": spec.max_task_retries,
            "death_reason": actor.death_reason,
        }
        data = codec.dumps(record)
        if sync and raylet.gcs is not None:
            try:
                raylet.gcs.put("actors", actor.actor_id, data)
            except Exception:
                logger.exception("writing the record of actor %s", actor.actor_id.hex())
                raylet.gcs_writer.put("actors", actor.actor_id, data)
        else:
            raylet.gcs_writer.put("actors", actor.actor_id, data)
        raylet.gcs_writer.publish("actor_state", data)
