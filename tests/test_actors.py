"""Tests of the actor API on a real node (issue 4): creation and options,
method options, per-caller ordering (also when arguments become ready out of
order), handle passing, named and detached actors (also across two drivers of
a `rayx start` cluster), threaded and async concurrency, and the GCS state.

Each actor is a process and the machine is small: tests use few actors, kill
what they create, and never assert on wall-clock speed.
"""
import asyncio
import os
import threading
import time

import psutil
import pytest

import rayx


@rayx.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def inc(self, by=1):
        self.n += by
        return self.n

    def get(self):
        return self.n

    def pid(self):
        return os.getpid()


@rayx.remote
class Recorder:
    def __init__(self):
        self.seen = []

    def record(self, value):
        self.seen.append(value)
        return value

    def seen_values(self):
        return list(self.seen)


@rayx.remote
def slow_value(value, delay):
    time.sleep(delay)
    return value


def _wait_gone(pid, timeout=30):
    deadline = time.time() + timeout
    while psutil.pid_exists(pid) and time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return not psutil.pid_exists(pid)


# ------------------------------------------------------------- creation


def test_bare_class_and_handle_at_once(rayx_start):
    c = Counter.remote(5)
    assert isinstance(c, rayx.actor.ActorHandle)
    ref = c.inc.remote()
    assert isinstance(ref, rayx.ObjectRef)
    assert rayx.get(ref, timeout=60) == 6
    assert rayx.get(c.inc.remote(by=4), timeout=60) == 10
    assert rayx.get(c.get.remote(), timeout=60) == 10
    rayx.kill(c)


def test_direct_instantiation_and_call_errors(rayx_start):
    with pytest.raises(TypeError, match="remote"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match="remote"):
        c.inc()
    with pytest.raises(AttributeError):
        c.no_such_method
    rayx.kill(c)


def test_class_options(rayx_start):
    @rayx.remote(num_cpus=0, max_concurrency=2, max_restarts=1, max_task_retries=1)
    class Opt:
        def ping(self):
            return "pong"

    a = Opt.remote()
    b = Opt.options(num_cpus=0, resources={}, num_gpus=0, name="opt-actor", namespace="opt-ns").remote()
    assert rayx.get([a.ping.remote(), b.ping.remote()], timeout=60) == ["pong", "pong"]
    assert rayx.get_actor("opt-actor", namespace="opt-ns") == b
    with pytest.raises(ValueError):
        Opt.options(no_such_option=1)
    rayx.kill(a)
    rayx.kill(b)


def test_method_num_returns(rayx_start):
    @rayx.remote
    class Multi:
        @rayx.method(num_returns=2)
        def two(self):
            return 1, 2

        def three(self):
            return [1, 2, 3]

        @rayx.method(num_returns=0)
        def nothing(self):
            pass

    m = Multi.remote()
    a, b = m.two.remote()
    assert rayx.get([a, b], timeout=60) == [1, 2]
    refs = m.three.options(num_returns=3).remote()
    assert rayx.get(refs, timeout=60) == [1, 2, 3]
    assert m.nothing.remote() is None
    x, y = m.two.options(num_returns=2).remote()
    assert rayx.get(y, timeout=60) == 2
    rayx.kill(m)


def test_objectref_arguments_resolved(rayx_start):
    c = Counter.remote(rayx.put(10))
    ref = rayx.put(5)
    assert rayx.get(c.inc.remote(ref), timeout=60) == 15
    assert rayx.get(c.inc.remote(slow_value.remote(1, 0.2)), timeout=60) == 16
    # refs inside containers are passed as refs
    r = Recorder.remote()
    inner = rayx.put(3)
    out = rayx.get(r.record.remote([inner]), timeout=60)
    assert isinstance(out[0], rayx.ObjectRef) and rayx.get(out[0], timeout=60) == 3
    rayx.kill(c)
    rayx.kill(r)


def test_method_error_keeps_actor_alive(rayx_start):
    @rayx.remote
    class Flaky:
        def __init__(self):
            self.n = 0

        def bad(self):
            self.n += 1
            raise ValueError("bad call")

        def count(self):
            return self.n

    f = Flaky.remote()
    with pytest.raises(ValueError, match="bad call"):
        rayx.get(f.bad.remote(), timeout=60)
    assert rayx.get(f.count.remote(), timeout=60) == 1
    rayx.kill(f)


# ------------------------------------------------------------- ordering


def test_calls_run_in_submission_order(rayx_start):
    r = Recorder.remote()
    refs = [r.record.remote(i) for i in range(200)]
    assert rayx.get(refs, timeout=60) == list(range(200))
    assert rayx.get(r.seen_values.remote(), timeout=60) == list(range(200))
    rayx.kill(r)


def test_ordering_with_out_of_order_argument_readiness(rayx_start):
    r = Recorder.remote()
    delays = [0.6, 0.0, 0.3, 0.05, 0.5, 0.0, 0.2, 0.1, 0.4, 0.0, 0.15, 0.25]
    refs = []
    for i, delay in enumerate(delays):
        # every other call has a slow argument; the others have plain values
        arg = slow_value.remote(i, delay) if i % 2 == 0 or delay else i
        refs.append(r.record.remote(arg))
    assert rayx.get(refs, timeout=60) == list(range(len(delays)))
    assert rayx.get(r.seen_values.remote(), timeout=60) == list(range(len(delays)))
    rayx.kill(r)


def test_failed_argument_fails_only_that_call(rayx_start):
    @rayx.remote
    def boom():
        raise KeyError("argument failed")

    r = Recorder.remote()
    a = r.record.remote(1)
    b = r.record.remote(boom.remote())
    c = r.record.remote(3)
    assert rayx.get(a, timeout=60) == 1
    with pytest.raises(KeyError):
        rayx.get(b, timeout=60)
    assert rayx.get(c, timeout=60) == 3
    assert rayx.get(r.seen_values.remote(), timeout=60) == [1, 3]
    rayx.kill(r)


# ------------------------------------------------------ handle passing


@rayx.remote
def call_from_task(handle, n):
    return rayx.get([handle.inc.remote() for _ in range(n)], timeout=60)


@rayx.remote
class Forwarder:
    def __init__(self, target):
        self.target = target

    def forward(self, n):
        return rayx.get([self.target.inc.remote() for _ in range(n)], timeout=60)

    def call_handle(self, handle):
        return rayx.get(handle.get.remote(), timeout=60)


def test_handle_passed_to_tasks_and_actors(rayx_start):
    c = Counter.remote()
    got = rayx.get(call_from_task.remote(c, 5), timeout=60)
    assert got == [1, 2, 3, 4, 5]          # ordered for that caller
    f = Forwarder.remote(c)
    assert rayx.get(f.forward.remote(3), timeout=60) == [6, 7, 8]
    assert rayx.get(f.call_handle.remote(c), timeout=60) == 8
    # a handle inside a container, and one returned from a task
    @rayx.remote
    def echo(x):
        return x

    [h] = rayx.get(echo.remote([c]), timeout=60)
    assert rayx.get(h.inc.remote(), timeout=60) == 9
    rayx.kill(f)
    rayx.kill(c)


def test_actor_created_inside_task(rayx_start):
    @rayx.remote
    def make():
        c = Counter.remote(100)
        rayx.get(c.inc.remote(), timeout=60)
        return c

    c = rayx.get(make.remote(), timeout=60)
    assert rayx.get(c.inc.remote(), timeout=60) == 102
    rayx.kill(c)


def test_current_actor_and_runtime_context(rayx_start):
    @rayx.remote
    class Me:
        def who(self):
            ctx = rayx.get_runtime_context()
            return ctx.get_actor_id(), ctx.current_actor

    m = Me.remote()
    actor_id, handle = rayx.get(m.who.remote(), timeout=60)
    assert actor_id == m._ray_actor_id.hex()
    assert handle == m
    rayx.kill(m)


# ---------------------------------------------------------- named actors


def test_named_actor_and_get_actor(rayx_start):
    a = Counter.options(name="named-counter").remote()
    rayx.get(a.inc.remote(), timeout=60)
    b = rayx.get_actor("named-counter")
    assert b == a
    assert rayx.get(b.inc.remote(), timeout=60) == 2
    with pytest.raises(ValueError, match="already taken"):
        Counter.options(name="named-counter").remote()
    with pytest.raises(ValueError):
        rayx.get_actor("no-such-actor")
    # the same name in another namespace is fine
    other = Counter.options(name="named-counter", namespace="elsewhere").remote()
    assert other != a
    assert rayx.get_actor("named-counter", namespace="elsewhere") == other
    rayx.kill(other)
    rayx.kill(a)
    # the name is free again once the actor is dead
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            rayx.get_actor("named-counter")
        except ValueError:
            break
        time.sleep(0.05)
    c = Counter.options(name="named-counter").remote()
    assert rayx.get(c.inc.remote(), timeout=60) == 1
    rayx.kill(c)


def test_get_if_exists(rayx_start):
    a = Counter.options(name="gie", get_if_exists=True).remote(1)
    b = Counter.options(name="gie", get_if_exists=True).remote(50)
    assert a == b
    assert rayx.get(b.get.remote(), timeout=60) == 1
    rayx.kill(a)


def test_named_actor_from_task(rayx_start):
    """Tasks run in their job's namespace: names resolve the same as in the driver."""
    Counter.options(name="task-visible").remote(7)

    @rayx.remote
    def look():
        h = rayx.get_actor("task-visible")
        return rayx.get(h.get.remote(), timeout=60)

    @rayx.remote
    def create():
        Counter.options(name="made-in-task").remote(9)
        return rayx.get_runtime_context().get_namespace()

    assert rayx.get(look.remote(), timeout=60) == 7
    namespace = rayx.get(create.remote(), timeout=60)
    assert namespace == rayx.get_runtime_context().get_namespace()
    h = rayx.get_actor("made-in-task")
    assert rayx.get(h.get.remote(), timeout=60) == 9
    rayx.kill(h)
    rayx.kill(rayx.get_actor("task-visible"))


def test_non_detached_actor_dies_with_its_driver_and_detached_survives(head_node):
    out = head_node.run_driver("""
        import os, rayx
        rayx.init(address="auto", namespace="shared")

        @rayx.remote
        class Store:
            def __init__(self):
                self.data = {}
            def put(self, k, v):
                self.data[k] = v
            def get(self, k):
                return self.data.get(k)
            def pid(self):
                return os.getpid()

        d = Store.options(name="keeper", lifetime="detached").remote()
        t = Store.options(name="temp").remote()
        rayx.get(d.put.remote("x", 42), timeout=60)
        print("PIDS", rayx.get(d.pid.remote(), timeout=60), rayx.get(t.pid.remote(), timeout=60))
        rayx.shutdown()
    """)
    assert "PIDS" in out.stdout, out.stderr
    detached_pid, temp_pid = map(int, out.stdout.split("PIDS")[1].split())
    assert _wait_gone(temp_pid), "the non-detached actor outlived its driver"
    out = head_node.run_driver("""
        import rayx
        rayx.init(address="auto", namespace="shared")
        d = rayx.get_actor("keeper")
        print("VALUE", rayx.get(d.get.remote("x"), timeout=60))
        try:
            rayx.get_actor("temp")
            print("TEMP ALIVE")
        except ValueError:
            print("TEMP GONE")
        try:
            rayx.get_actor("keeper", namespace="other")
            print("WRONG NAMESPACE FOUND")
        except ValueError:
            print("NAMESPACE OK")
        rayx.kill(d)
        rayx.shutdown()
    """)
    assert "VALUE 42" in out.stdout, out.stderr
    assert "TEMP GONE" in out.stdout
    assert "NAMESPACE OK" in out.stdout
    assert psutil.pid_exists(detached_pid) is False or _wait_gone(detached_pid)


# ----------------------------------------------------------- concurrency


@rayx.remote(max_concurrency=3)
class Threaded:
    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def work(self, delay):
        start = time.monotonic()
        time.sleep(delay)
        with self.lock:
            self.spans.append((start, time.monotonic(), threading.get_ident()))
        return threading.current_thread().name

    def spans_(self):
        return list(self.spans)


def _overlaps(spans):
    spans = sorted(spans)
    return any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))


def _max_overlap(spans):
    events = sorted([(s, 1) for s, e, *_ in spans] + [(e, -1) for s, e, *_ in spans],
                    key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def test_threaded_actor_runs_calls_concurrently(rayx_start):
    t = Threaded.remote()
    names = rayx.get([t.work.remote(0.5) for _ in range(6)], timeout=60)
    spans = rayx.get(t.spans_.remote(), timeout=60)
    assert len(spans) == 6
    assert _overlaps(spans)
    assert _max_overlap(spans) <= 3
    assert len({s[2] for s in spans}) > 1
    assert all(name != "MainThread" for name in names)
    rayx.kill(t)


def test_default_actor_runs_calls_one_at_a_time(rayx_start):
    @rayx.remote
    class Serial:
        def __init__(self):
            self.spans = []

        def work(self, delay):
            start = time.monotonic()
            time.sleep(delay)
            self.spans.append((start, time.monotonic()))

        def spans_(self):
            return self.spans

    s = Serial.remote()
    rayx.get([s.work.remote(0.05) for _ in range(5)], timeout=60)
    assert not _overlaps(rayx.get(s.spans_.remote(), timeout=60))
    rayx.kill(s)


@rayx.remote
class AsyncActor:
    def __init__(self):
        self.spans = []
        self.running = 0
        self.peak = 0

    async def work(self, delay):
        start = time.monotonic()
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(delay)
        self.running -= 1
        self.spans.append((start, time.monotonic()))
        return delay

    async def wait_ref(self, refs):
        return await refs[0]

    def sync_method(self):
        return "sync"

    def stats(self):
        return self.peak, list(self.spans)


def test_async_actor_runs_calls_concurrently(rayx_start):
    a = AsyncActor.remote()
    assert rayx.get([a.work.remote(0.5) for _ in range(20)], timeout=60) == [0.5] * 20
    peak, spans = rayx.get(a.stats.remote(), timeout=60)
    assert peak > 1 and _overlaps(spans)
    assert rayx.get(a.sync_method.remote(), timeout=60) == "sync"
    assert rayx.get(a.wait_ref.remote([slow_value.remote(7, 0.1)]), timeout=60) == 7
    rayx.kill(a)


def test_async_actor_max_concurrency(rayx_start):
    a = AsyncActor.options(max_concurrency=2).remote()
    rayx.get([a.work.remote(0.2) for _ in range(6)], timeout=60)
    peak, spans = rayx.get(a.stats.remote(), timeout=60)
    assert peak == 2
    b = AsyncActor.options(max_concurrency=1).remote()
    rayx.get([b.work.remote(0.05) for _ in range(4)], timeout=60)
    peak, spans = rayx.get(b.stats.remote(), timeout=60)
    assert peak == 1 and not _overlaps(spans)
    rayx.kill(a)
    rayx.kill(b)


# ------------------------------------------------------------ GCS state


def test_list_actors_state(rayx_start):
    from rayx.util.state import list_actors
    c = Counter.options(name="listed").remote()
    pid = rayx.get(c.pid.remote(), timeout=60)
    actor_id = c._ray_actor_id.hex()

    def mine():
        return [a for a in list_actors() if a["actor_id"] == actor_id]

    deadline = time.time() + 10
    while time.time() < deadline and not (mine() and mine()[0]["state"] == "ALIVE"):
        time.sleep(0.1)
    [record] = mine()
    assert record["class_name"] == "Counter"
    assert record["state"] == "ALIVE"
    assert record["name"] == "listed"
    assert record["namespace"] == rayx.get_runtime_context().get_namespace()
    assert record["pid"] == pid
    assert record["restarts"] == 0
    assert record["node_id"] == rayx.get_runtime_context().get_node_id()
    rayx.kill(c)
    deadline = time.time() + 10
    while time.time() < deadline and mine()[0]["state"] != "DEAD":
        time.sleep(0.1)
    assert mine()[0]["state"] == "DEAD"
    assert list_actors(filters=[("state", "=", "DEAD")])


def test_actor_state_published(rayx_start):
    import queue
    from rayx._core import codec
    from rayx.gcs import GcsClient
    from rayx.runtime import context
    gcs = context.gcs()
    client = GcsClient(gcs.address, gcs.password) if hasattr(gcs, "password") else None
    if client is None:
        pytest.skip("GcsClient does not expose its password")
    got = queue.Queue()
    client.subscribe(["actor_state"], lambda ch, data: got.put(codec.loads(data)))
    try:
        time.sleep(0.3)
        c = Counter.remote()
        actor_id = c._ray_actor_id.binary()
        rayx.get(c.inc.remote(), timeout=60)
        rayx.kill(c)
        states = []
        deadline = time.time() + 20
        while "DEAD" not in states and time.time() < deadline:
            try:
                record = got.get(timeout=1)
            except queue.Empty:
                continue
            if record["actor_id"] == actor_id:
                states.append(record["state"])
        assert "ALIVE" in states and states[-1] == "DEAD"
    finally:
        client.close()


def test_call_arriving_before_the_creation(rayx_start, monkeypatch):
    """Another driver may resolve a name before the creator's submission reaches
    the raylet: such calls wait for the creation instead of failing."""
    from rayx.runtime import context
    core = context.core_worker()
    held = []
    real_submit = core.submit_task
    monkeypatch.setattr(core, "submit_task", lambda spec: held.append(spec) or [])
    c = Counter.remote(3)
    monkeypatch.setattr(core, "submit_task", real_submit)
    [creation] = held
    ref = c.inc.remote()
    ready, _ = rayx.wait([ref], timeout=0.3)
    assert not ready
    real_submit(creation)
    assert rayx.get(ref, timeout=60) == 4
    rayx.kill(c)
