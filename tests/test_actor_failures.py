"""Tests of actor endings and failures on a real node (issue 4): rayx.kill,
graceful ``__ray_terminate__``, ``exit_actor()``, constructor errors, crashes
(os._exit, SIGKILL) and restarts with and without task retries, owner death,
and the resources an actor holds while alive.

A fresh node per test (each test kills actors on purpose); few actors each,
generous timeouts, no wall-clock assertions.
"""
import os
import signal
import time

import psutil
import pytest

import rayx
from helpers import wait_for
from rayx.actor import exit_actor
from rayx.exceptions import ActorDiedError, RayActorError


@rayx.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def inc(self, by=1):
        self.n += by
        return self.n

    def pid(self):
        return os.getpid()

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def crash(self):
        os._exit(1)

    def leave(self):
        exit_actor()


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _state(handle):
    from rayx.util.state import get_actor
    record = get_actor(handle._ray_actor_id.hex())
    return record and record["state"]


def _cpus():
    return rayx.available_resources().get("CPU", 0)


# ------------------------------------------------------------------- kill


def test_kill(rayx_fresh):
    c = Counter.remote()
    pid = rayx.get(c.pid.remote(), timeout=60)
    running = c.sleep.remote(30)
    time.sleep(0.2)
    rayx.kill(c)
    with pytest.raises(ActorDiedError, match="killed"):
        rayx.get(running, timeout=60)
    with pytest.raises(ActorDiedError, match="killed"):
        rayx.get(c.inc.remote(), timeout=60)
    assert wait_for(lambda: _gone(pid))
    assert wait_for(lambda: _state(c) == "DEAD")
    assert isinstance(ActorDiedError("x"), RayActorError)
    # killing again is harmless
    rayx.kill(c)
    with pytest.raises(ValueError):
        rayx.kill("not a handle")


def test_call_to_dead_actor_keeps_arguments_alive(rayx_fresh):
    c = Counter.remote()
    rayx.kill(c)
    big = rayx.put(b"x" * (1 << 20))
    small = rayx.put(41)
    for _ in range(3):
        with pytest.raises(ActorDiedError):
            rayx.get(c.inc.remote(small), timeout=60)
        with pytest.raises(ActorDiedError):
            rayx.get(c.inc.remote([big]), timeout=60)
    # the caller still holds them: they must not have been freed
    assert rayx.get(small, timeout=60) == 41
    assert len(rayx.get(big, timeout=60)) == 1 << 20


def test_kill_pending_actor(rayx_fresh):
    @rayx.remote(num_cpus=0, resources={"never": 1})
    class Unplaceable:
        def ping(self):
            return 1

    u = Unplaceable.remote()
    ref = u.ping.remote()
    rayx.kill(u)
    with pytest.raises(ActorDiedError):
        rayx.get(ref, timeout=60)


def test_kill_with_restart(rayx_fresh):
    c = Counter.options(max_restarts=1).remote(10)
    assert rayx.get(c.inc.remote(), timeout=60) == 11
    pid = rayx.get(c.pid.remote(), timeout=60)
    rayx.kill(c, no_restart=False)
    # the constructor re-runs with its original arguments: the state starts over
    assert rayx.get(c.inc.remote(), timeout=60) == 11
    assert rayx.get(c.pid.remote(), timeout=60) != pid
    assert wait_for(lambda: _state(c) == "ALIVE")
    rayx.kill(c)
    with pytest.raises(ActorDiedError):
        rayx.get(c.inc.remote(), timeout=60)


# ------------------------------------------------------------ clean exits


def test_ray_terminate_is_graceful(rayx_fresh):
    c = Counter.remote()
    pid = rayx.get(c.pid.remote(), timeout=60)
    before = [c.inc.remote() for _ in range(5)]
    slow = c.sleep.remote(0.5)
    done = c.__ray_terminate__.remote()
    after = c.inc.remote()
    # calls submitted before the termination finish; later ones fail
    assert rayx.get(before, timeout=60) == [1, 2, 3, 4, 5]
    assert rayx.get(slow, timeout=60) == 0.5
    rayx.get(done, timeout=60)
    with pytest.raises(ActorDiedError):
        rayx.get(after, timeout=60)
    assert wait_for(lambda: _gone(pid))
    assert wait_for(lambda: _state(c) == "DEAD")


def test_ray_terminate_threaded_waits_for_running_calls(rayx_fresh):
    c = Counter.options(max_concurrency=2, max_restarts=3).remote()
    slow = c.sleep.remote(0.5)
    time.sleep(0.1)
    c.__ray_terminate__.remote()
    assert rayx.get(slow, timeout=60) == 0.5
    # no restart after a graceful exit, even with max_restarts
    with pytest.raises(ActorDiedError):
        rayx.get(c.inc.remote(), timeout=60)


@pytest.mark.parametrize("kind", ["sync", "threaded", "async"])
def test_exit_actor(rayx_fresh, kind):
    @rayx.remote(max_restarts=2)
    class Leaver:
        def __init__(self):
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

        def pid(self):
            return os.getpid()

        def leave(self):
            exit_actor()

    @rayx.remote(max_restarts=2)
    class AsyncLeaver:
        async def inc(self):
            return 1

        async def pid(self):
            return os.getpid()

        async def leave(self):
            exit_actor()

    if kind == "async":
        a = AsyncLeaver.remote()
    else:
        a = Leaver.options(max_concurrency=2 if kind == "threaded" else None).remote()
    pid = rayx.get(a.pid.remote(), timeout=60)
    assert rayx.get(a.inc.remote(), timeout=60) == 1
    with pytest.raises(ActorDiedError, match="exit_actor"):
        rayx.get(a.leave.remote(), timeout=60)
    with pytest.raises(ActorDiedError, match="exit_actor"):
        rayx.get(a.inc.remote(), timeout=60)
    assert wait_for(lambda: _gone(pid))
    assert wait_for(lambda: _state(a) == "DEAD")


def test_exit_actor_outside_actor(rayx_fresh):
    with pytest.raises(TypeError):
        exit_actor()

    @rayx.remote
    def task():
        try:
            exit_actor()
        except TypeError:
            return "refused"

    assert rayx.get(task.remote(), timeout=60) == "refused"


def test_exit_actor_in_constructor(rayx_fresh):
    @rayx.remote(max_restarts=2)
    class Never:
        def __init__(self):
            exit_actor()

        def ping(self):
            return 1

    n = Never.remote()
    with pytest.raises(ActorDiedError, match="exit_actor"):
        rayx.get(n.ping.remote(), timeout=60)
    assert wait_for(lambda: _state(n) == "DEAD")
    from rayx.util.state import get_actor
    assert get_actor(n._ray_actor_id.hex())["restarts"] == 0     # an intended exit: no restart


# ------------------------------------------------------------ constructor


class InitError(Exception):
    pass


def test_constructor_error(rayx_fresh):
    @rayx.remote(max_restarts=3)
    class Broken:
        def __init__(self, x):
            raise InitError(f"cannot build with {x}")

        def ping(self):
            return 1

    b = Broken.remote(42)
    refs = [b.ping.remote() for _ in range(3)]
    for ref in refs + [b.ping.remote()]:
        with pytest.raises(ActorDiedError) as info:
            rayx.get(ref, timeout=60)
        assert "cannot build with 42" in str(info.value)
        assert isinstance(info.value.cause, InitError) or "InitError" in str(info.value)
    assert wait_for(lambda: _state(b) == "DEAD")
    from rayx.util.state import get_actor
    assert get_actor(b._ray_actor_id.hex())["restarts"] == 0
    # the node's CPUs are all back
    assert wait_for(lambda: _cpus() == 2)


# ------------------------------------------------------- crashes, restarts


def test_crash_without_restart(rayx_fresh):
    c = Counter.remote()
    pid = rayx.get(c.pid.remote(), timeout=60)
    with pytest.raises(ActorDiedError) as info:
        rayx.get(c.crash.remote(), timeout=60)
    assert str(pid) in str(info.value)
    with pytest.raises(ActorDiedError, match=str(pid)):
        rayx.get(c.inc.remote(), timeout=60)


def test_sigkill_and_restart(rayx_fresh):
    c = Counter.options(max_restarts=2).remote(rayx.put(100))
    assert rayx.get(c.inc.remote(), timeout=60) == 101
    from rayx.util.state import get_actor
    for restarts in (1, 2):
        pid = rayx.get(c.pid.remote(), timeout=60)
        os.kill(pid, signal.SIGKILL)
        # (a call sent before the raylet notices the death would fail: wait for it)
        assert wait_for(lambda: get_actor(c._ray_actor_id.hex())["restarts"] == restarts)
        assert rayx.get(c.inc.remote(), timeout=60) == 101
        assert rayx.get(c.pid.remote(), timeout=60) != pid
    pid = rayx.get(c.pid.remote(), timeout=60)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError, match=str(pid)):
        rayx.get(c.inc.remote(), timeout=60)
    assert wait_for(lambda: _state(c) == "DEAD")


def test_calls_during_restart_wait_for_it(rayx_fresh):
    @rayx.remote(max_restarts=1)
    class SlowStart:
        def __init__(self):
            time.sleep(1.0)
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

        def pid(self):
            return os.getpid()

    s = SlowStart.remote()
    pid = rayx.get(s.pid.remote(), timeout=60)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: _state(s) == "RESTARTING")
    refs = [s.inc.remote() for _ in range(5)]
    assert rayx.get(refs, timeout=60) == [1, 2, 3, 4, 5]
    assert wait_for(lambda: _state(s) == "ALIVE")
    rayx.kill(s)


def test_running_calls_fail_without_task_retries(rayx_fresh):
    c = Counter.options(max_restarts=1).remote()
    pid = rayx.get(c.pid.remote(), timeout=60)
    running = c.sleep.remote(30)
    queued = c.inc.remote()
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError):
        rayx.get(running, timeout=60)
    with pytest.raises(ActorDiedError):
        rayx.get(queued, timeout=60)
    # the actor itself came back
    assert rayx.get(c.inc.remote(), timeout=60) == 1


def test_running_calls_retried_with_task_retries(rayx_fresh):
    @rayx.remote(max_restarts=2, max_task_retries=2)
    class Once:
        def __init__(self, marker):
            self.marker = marker

        def crash_once(self):
            # crashes the first time only (the marker file survives the restart)
            if not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)
            return "second try"

        def inc_after(self, x):
            return x + 1

    marker = f"/tmp/w/rayx-crash-once-{os.getpid()}-{time.time()}"
    os.makedirs("/tmp/w", exist_ok=True)
    try:
        o = Once.remote(marker)
        first = o.crash_once.remote()
        later = o.inc_after.remote(1)
        assert rayx.get(first, timeout=60) == "second try"
        assert rayx.get(later, timeout=60) == 2
        # per-method override: no retries for this call
        no_retry = Once.options(max_restarts=1, max_task_retries=0).remote(marker + "-b")
        with pytest.raises(ActorDiedError):
            rayx.get(no_retry.crash_once.remote(), timeout=60)
        assert rayx.get(no_retry.crash_once.remote(), timeout=60) == "second try"
        o2 = Once.remote(marker + "-c")
        with pytest.raises(ActorDiedError):
            rayx.get(o2.crash_once.options(max_task_retries=0).remote(), timeout=60)
        rayx.kill(o)
        rayx.kill(no_retry)
        rayx.kill(o2)
    finally:
        for suffix in ("", "-b", "-c"):
            if os.path.exists(marker + suffix):
                os.remove(marker + suffix)


def test_retry_exceptions_on_actor_method(rayx_fresh):
    @rayx.remote(max_task_retries=2)
    class Flaky:
        def __init__(self):
            self.calls = 0

        @rayx.method(retry_exceptions=True)
        def flaky(self):
            self.calls += 1
            if self.calls < 3:
                raise ValueError("not yet")
            return self.calls

    f = Flaky.remote()
    assert rayx.get(f.flaky.remote(), timeout=60) == 3
    rayx.kill(f)


def test_crash_during_constructor_restarts(rayx_fresh):
    marker = f"/tmp/w/rayx-ctor-crash-{os.getpid()}-{time.time()}"
    os.makedirs("/tmp/w", exist_ok=True)

    @rayx.remote(max_restarts=1)
    class CrashyInit:
        def __init__(self, marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)

        def ping(self):
            return "up"

    try:
        a = CrashyInit.remote(marker)
        assert rayx.get(a.ping.remote(), timeout=60) == "up"
        rayx.kill(a)
    finally:
        if os.path.exists(marker):
            os.remove(marker)


# ------------------------------------------------------------ owner death


def test_actor_dies_with_owner_actor(rayx_fresh):
    @rayx.remote
    class Parent:
        def __init__(self):
            self.child = Counter.remote()

        def child_handle(self):
            return [self.child]

        def child_pid(self):
            return rayx.get(self.child.pid.remote(), timeout=60)

    @rayx.remote
    class DetachedParent:
        def make(self):
            self.child = Counter.options(name="orphan-ok", lifetime="detached").remote()
            return rayx.get(self.child.pid.remote(), timeout=60)

    p = Parent.remote()
    child_pid = rayx.get(p.child_pid.remote(), timeout=60)
    [child] = rayx.get(p.child_handle.remote(), timeout=60)
    rayx.kill(p)
    assert wait_for(lambda: _gone(child_pid))
    with pytest.raises(ActorDiedError):
        rayx.get(child.inc.remote(), timeout=60)
    d = DetachedParent.remote()
    detached_pid = rayx.get(d.make.remote(), timeout=60)
    rayx.kill(d)
    time.sleep(0.5)
    assert not _gone(detached_pid)
    orphan = rayx.get_actor("orphan-ok")
    assert rayx.get(orphan.inc.remote(), timeout=60) == 1
    rayx.kill(orphan)


# -------------------------------------------------------------- resources


def test_actor_holds_resources_while_alive(rayx_fresh):
    @rayx.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return 1

    @rayx.remote
    class Default:
        def ping(self):
            return 1

    d = Default.remote()
    assert rayx.get(d.ping.remote(), timeout=60) == 1
    # A default actor holds no CPU while alive.
    deadline = time.time() + 10
    while rayx.available_resources().get("CPU", 0) != 2 and time.time() < deadline:
        time.sleep(0.1)
    assert rayx.available_resources().get("CPU", 0) == 2
    h = Holder.remote()
    assert rayx.get(h.ping.remote(), timeout=60) == 1
    deadline = time.time() + 10
    while rayx.available_resources().get("CPU", 0) != 1 and time.time() < deadline:
        time.sleep(0.1)
    assert rayx.available_resources().get("CPU", 0) == 1
    rayx.kill(h)
    deadline = time.time() + 10
    while rayx.available_resources().get("CPU", 0) != 2 and time.time() < deadline:
        time.sleep(0.1)
    assert rayx.available_resources().get("CPU", 0) == 2
    rayx.kill(d)


def test_custom_resources(rayx_fresh):
    @rayx.remote(num_cpus=0, resources={"nothing_here": 1})
    class Never:
        def ping(self):
            return 1

    n = Never.remote()
    ready, _ = rayx.wait([n.ping.remote()], timeout=1)
    assert not ready
    rayx.kill(n)


@pytest.mark.parametrize("rayx_fresh", [{"resources": {"widget": 1}}], indirect=True)
def test_custom_resource_held(rayx_fresh):
    @rayx.remote(num_cpus=0, resources={"widget": 1})
    class W:
        def ping(self):
            return os.getpid()

    a = W.remote()
    b = W.remote()
    assert rayx.get(a.ping.remote(), timeout=60)
    ready, _ = rayx.wait([b.ping.remote()], timeout=1)
    assert not ready          # the widget is held by a
    rayx.kill(a)
    assert rayx.get(b.ping.remote(), timeout=60)
    rayx.kill(b)


