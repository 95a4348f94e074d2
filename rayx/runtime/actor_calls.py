"""The caller side of actor calls. A caller on the actor's node pushes its calls
straight to the actor's worker, over a link to that worker's own Unix socket
(``rayx.runtime.links``), and gets the results back on it: two process hops per
call instead of four (caller -> raylet -> worker -> raylet -> caller), and no
raylet work on the way. What becomes of the results is ``rayx.runtime.pushed_calls``'s.

The raylet stays in charge: it says when a caller may go direct
(``ActorManager.direct_probe``: the actor is alive on this node and none of
this caller's calls are still queued there).

One ``ActorChannel`` per actor this process calls, in one of three modes:

- PROBING: the raylet was asked where the actor takes calls; calls made
  meanwhile wait in the channel, in order.
- DIRECT: linked to the actor's worker; calls go there in the order they
  were made. A call's top-level ref arguments must be local first: values
  this process holds travel inline, objects on the node by id, others are
  awaited through the raylet (later calls wait behind, keeping the order).
- RAYLET: the actor lives on another node, or is dead: calls go through the
  raylet with per-caller sequence numbers (it forwards or rejects them).

When the link breaks (the actor's process died or the actor ended), the
channel probes again naming the lost socket, and the raylet answers once it
has dealt with the death: either the restarted worker's socket (calls that
were running are sent again if ``max_task_retries`` allows, or fail with
ActorDiedError) or "raylet" (dead: the raylet rejects the calls with the
actor's death reason).
"""
import collections
import itertools
import threading

from rayx import messages
from rayx.exceptions import ACTOR_CALL_FORCE_CANCEL, ActorDiedError, TaskCancelledError
from rayx.runtime import links
from rayx.runtime.pushed_calls import PushedCall, kept_arguments

PROBING = "probing"
DIRECT = "direct"
RAYLET = "raylet"

REPROBE_DELAY = 0.05

# Hot path: built inline with the declaration's tag (tests/test_messages.py checks
# every such tuple against its declaration).
_PUSH_TASK_TAG = messages.PUSH_TASK.tag
_PUSH_CANCEL = messages.PUSH_CANCEL
_NO_VALUES = {}           # the argument values of a call without ref arguments (never mutated)


class ActorCalls:
    """This process's calls to actors: one channel per actor it calls."""

    def __init__(self, core):
        self.core = core
        self.channels = {}        # actor id -> ActorChannel
        self._lock = threading.Lock()

    def submit(self, spec):
        """Refs to the returns of the actor call ``spec``."""
        channel = self.channels.get(spec.actor_id)
        if channel is None:
            with self._lock:
                channel = self.channels.get(spec.actor_id)
                if channel is None:
                    channel = self.channels[spec.actor_id] = ActorChannel(self.core, spec.actor_id)
        return channel.submit(spec)

    def cancel(self, task_id, force):
        """rayx.cancel of an actor call made here; False if none of our channels has it."""
        return any(channel.cancel(task_id, force) for channel in list(self.channels.values()))

    def close(self):
        for channel in list(self.channels.values()):
            channel.close()


class ActorChannel:
    """This process's calls to one actor (see the module's docstring)."""

    def __init__(self, core, actor_id):
        self.core = core
        self.pushed = core.pushed
        self.actor_id = actor_id
        self.lock = threading.RLock()
        self.mode = None
        self.queue = collections.deque()   # calls not sent yet, in order
        self.inflight = {}                 # task id -> call sent on the link
        self.link = None
        self.path = ""
        self.raylet_seq = itertools.count(1)
        self.closed = False
        self._handlers = self.link_handlers()

    def link_handlers(self):
        """What the actor's worker sends on the link: PUSH_DONE."""
        return messages.handlers({messages.PUSH_DONE: self._on_done}, leading=("link",))

    def close(self):
        self.closed = True

    # ------------------------------------------------------------ submit

    def submit(self, spec):
        core = self.core
        if self.mode == RAYLET:
            with self.lock:
                if self.mode == RAYLET:
                    spec.sequence_number = next(self.raylet_seq)
                    return core.submit_task(spec)
        keep = kept_arguments(spec)
        # Without ref arguments there is nothing to resolve before sending.
        call = PushedCall(spec, keep, None if keep else _NO_VALUES)
        refs = self.pushed.track(call)
        with self.lock:
            if self.mode == RAYLET:
                self._send_via_raylet(call)
            else:
                self.queue.append(call)
                if self.mode is None:
                    self._probe("")
                elif self.mode == DIRECT:
                    self._pump()
        return refs

    def _pump(self):
        """Send the calls at the head of the queue whose arguments are local (lock held)."""
        queue = self.queue
        link = self.link
        inflight = self.inflight
        while queue:
            call = queue[0]
            if call.values is None and not self._resolve(call):
                return
            queue.popleft()
            if call.done:
                continue           # failed without running (an argument is an error)
            spec = call.spec
            inflight[spec.task_id] = call
            link.send((_PUSH_TASK_TAG, spec, call.values))

    def _resolve(self, call):
        """Fill ``call.values`` if every ref argument is local; else ask the raylet to tell
        us when they are (and return False)."""
        resolved, missing, error = self.core.cache.local_values(call.spec.arg_refs())
        if error is not None:
            # An argument is an error: the call fails with it, without running.
            self.pushed.fail_with(call, error)
            return True
        if not missing:
            call.values = resolved
            return True
        if not call.resolving:
            call.resolving = True
            self.pushed.escape_all(missing)
            self.core.fetch_async(missing, lambda ok: self._arguments_ready(call))
        return False

    def _arguments_ready(self, call):
        with self.lock:
            call.resolving = False
            if self.mode == DIRECT and self.queue and self.queue[0] is call:
                self._pump()

    def _send_via_raylet(self, call):
        call.spec.sequence_number = next(self.raylet_seq)
        self.pushed.send_via_raylet(call)

    # --------------------------------------------------- probe and break

    def _probe(self, broken_path):
        self.mode = PROBING
        core = self.core
        core.requests.call_async("actor_direct", (self.actor_id, core.worker_id, broken_path),
                                 lambda ok, answer: self._probe_answered(ok, answer, broken_path))

    def _probe_answered(self, ok, answer, broken_path):
        if self.closed:
            return
        with self.lock:
            if ok and answer[0] == DIRECT:
                try:
                    self.link = links.connect(self.core.conn, answer[1], self._handlers, self._on_break)
                except OSError:
                    # Gone already: ask again shortly, once the raylet has seen it.
                    self.mode = PROBING
                    timer = threading.Timer(REPROBE_DELAY, self._reprobe, (answer[1],))
                    timer.daemon = True
                    timer.start()
                    return
                self.path = answer[1]
                self.mode = DIRECT
                self._retry_lost()
                self._pump()
                return
            self.mode = RAYLET
            queue, self.queue = self.queue, collections.deque()
            for call in queue:
                if call.lost:
                    call.spec.attempt += 1     # the lost run counts (the raylet applies the rule)
                if not call.done:
                    self._send_via_raylet(call)

    def _reprobe(self, broken_path):
        with self.lock:
            if not self.closed and self.mode == PROBING:
                self._probe(broken_path)

    def _retry_lost(self):
        """Calls that were running when the actor's process died: again if allowed."""
        for call in self.queue:
            if not call.lost:
                continue
            call.lost = False
            spec = call.spec
            if spec.take_retry():
                continue
            self.pushed.fail(call, ActorDiedError(
                f"The actor {spec.actor_class_name()} died while running "
                f"{spec.function_name}; its max_task_retries ({spec.max_retries}) does not allow "
                f"retrying the call.", actor_id=self.actor_id.hex()))

    # ------------------------------------------------------------ cancel

    def cancel(self, task_id, force):
        """A call not sent yet is dropped (TaskCancelledError); a running one is told to
        the actor's worker (which cancels it if the actor is async). False if this
        channel never held it (or it went through the raylet)."""
        with self.lock:
            call = next((c for c in self.queue if c.spec.task_id == task_id), None)
            running = call is None and task_id in self.inflight
            if call is None and not running:
                return False
            if force:
                raise ValueError(ACTOR_CALL_FORCE_CANCEL)
            if running:
                self.link.send_now(_PUSH_CANCEL(task_id, False))
                return True
            self.queue.remove(call)
            self.pushed.fail(call, TaskCancelledError.before_it_ran(call.spec))
            if self.mode == DIRECT:
                self._pump()       # it may have held up the calls behind it
        return True

    # ------------------------------------------------------------ the link

    def _on_done(self, link, task_id, results):
        call = self.inflight.pop(task_id, None)
        if call is not None:
            self.pushed.complete(call, results)

    def _on_break(self, link):
        if self.closed or self.core.closed:
            return
        with self.lock:
            if link is not self.link:
                return
            self.link = None
            lost = list(self.inflight.values())
            self.inflight.clear()
            for call in reversed(lost):
                call.lost = True
                self.queue.appendleft(call)
            self._probe(self.path)
