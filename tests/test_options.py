"""Options of @rayx.remote / .options() / rayx.method: each does what Ray documents
(max_calls, max_pending_calls, concurrency_groups, retry_exceptions lists, task
names) or, when rayx cannot honour it yet (runtime_env, label_selector), fails
with an error naming it instead of being dropped."""
import asyncio
import os
import threading

import pytest

import rayx
from rayx import options
from rayx.exceptions import PendingCallsLimitExceeded
from rayx.util import state

from helpers import wait_for


# ------------------------------------------------------------- runtime_env

def test_init_rejects_runtime_env_before_starting_anything(shutdown_only):
    assert not rayx.is_initialized()

    class JobConfig:         # what Ray's JobConfig carries
        runtime_env = {"pip": ["requests"]}

    with pytest.raises(NotImplementedError, match=r"runtime_env.*\['env_vars', 'working_dir'\]"):
        rayx.init(num_cpus=1, runtime_env={"env_vars": {"A": "1"}, "working_dir": "."})
    with pytest.raises(NotImplementedError, match=r"runtime_env.*job_config.*\['pip'\]"):
        rayx.init(num_cpus=1, job_config=JobConfig())
    assert not rayx.is_initialized()


def test_runtime_env_rejected_wherever_options_are_given():
    env = {"env_vars": {"A": "1"}}
    with pytest.raises(NotImplementedError, match=r"runtime_env.*\['env_vars'\]"):
        @rayx.remote(runtime_env=env)
        def f():
            pass

    @rayx.remote
    def g():
        pass

    @rayx.remote
    class A:
        pass

    with pytest.raises(NotImplementedError, match="runtime_env"):
        g.options(runtime_env=env)
    with pytest.raises(NotImplementedError, match="runtime_env"):
        A.options(runtime_env={"working_dir": "/tmp"})
    with pytest.raises(NotImplementedError, match="runtime_env"):
        rayx.remote(runtime_env=env)(A._definition)
    # Nothing asked for: accepted, as in Ray.
    g.options(runtime_env={})
    g.options(runtime_env=None)


def test_other_unsupported_or_bad_options_fail_clearly():
    @rayx.remote
    def g():
        pass

    with pytest.raises(NotImplementedError, match="label_selector"):
        g.options(label_selector={"zone": "a"})
    with pytest.raises(ValueError, match="max_calls cannot be overridden"):
        g.options(max_calls=2)
    with pytest.raises(TypeError, match="retry_exceptions"):
        g.options(retry_exceptions=[ValueError, "KeyError"])
    with pytest.raises(ValueError, match="max_pending_calls"):
        rayx.remote(max_pending_calls=0)(type("C", (), {}))
    with pytest.raises(ValueError, match="concurrency_groups"):
        rayx.remote(concurrency_groups={"io": 0})(type("C", (), {}))


# ------------------------------------------------------------- max_calls

@rayx.remote(max_calls=1, max_retries=0)
def pid_and_double(x):
    return os.getpid(), 2 * x


def test_max_calls_runs_each_call_in_a_new_process(rayx_start):
    # max_retries=0: an exit after max_calls counted as a crash would fail a call.
    out = rayx.get([pid_and_double.remote(i) for i in range(4)], timeout=120)
    assert [doubled for _, doubled in out] == [0, 2, 4, 6]
    assert len({pid for pid, _ in out}) == 4
    # The workers that exited were replaced: plain tasks still run on both CPUs.
    assert rayx.get(pid_and_double.options(num_cpus=2).remote(5), timeout=120)[1] == 10


# ------------------------------------------------------- retry_exceptions

class Listed(Exception):
    pass


class ListedChild(Listed):
    pass


def _raise_and_count(path, error):
    """Count the attempt in ``path``; raise ``error`` on the first two."""
    attempt = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(attempt + 1))
    if attempt < 2:
        raise error(f"attempt {attempt}")
    return attempt


@rayx.remote(max_retries=3, retry_exceptions=[Listed])
def flaky(path, error):
    return _raise_and_count(path, error)


def _attempts(path):
    return int(open(path).read())


@pytest.mark.parametrize("strategy", ["DEFAULT", "SPREAD"])   # leased, and through the raylet
def test_retry_exceptions_list_retries_only_those_classes(rayx_start, tmp_path, strategy):
    task = flaky.options(scheduling_strategy=strategy)
    for error in (Listed, ListedChild):
        path = str(tmp_path / error.__name__)
        assert rayx.get(task.remote(path, error), timeout=60) == 2
        assert _attempts(path) == 3
    path = str(tmp_path / "other")
    with pytest.raises(ValueError, match="attempt 0"):
        rayx.get(task.remote(path, ValueError), timeout=60)
    assert _attempts(path) == 1
    path = str(tmp_path / "overridden")
    with pytest.raises(Listed, match="attempt 0"):
        rayx.get(task.options(retry_exceptions=[KeyError]).remote(path, Listed), timeout=60)
    assert _attempts(path) == 1


@rayx.remote(max_task_retries=3)
class Flaky:
    @rayx.method(retry_exceptions=[Listed])
    def listed(self, path, error):
        return _raise_and_count(path, error)

    def plain(self, path, error):
        return _raise_and_count(path, error)


def test_retry_exceptions_list_on_actor_methods(rayx_start, tmp_path):
    actor = Flaky.remote()
    path = str(tmp_path / "listed")
    assert rayx.get(actor.listed.remote(path, ListedChild), timeout=60) == 2
    assert _attempts(path) == 3
    path = str(tmp_path / "unlisted")
    with pytest.raises(KeyError):
        rayx.get(actor.listed.remote(path, KeyError), timeout=60)
    assert _attempts(path) == 1
    path = str(tmp_path / "options")
    assert rayx.get(actor.plain.options(retry_exceptions=[KeyError]).remote(path, KeyError), timeout=60) == 2
    assert _attempts(path) == 3
    path = str(tmp_path / "options-unlisted")
    with pytest.raises(Listed):
        rayx.get(actor.plain.options(retry_exceptions=[KeyError]).remote(path, Listed), timeout=60)
    assert _attempts(path) == 1


# ---------------------------------------------------------------- names

@rayx.remote
def square(x):
    return x * x


@rayx.remote
class Counter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n


def test_tasks_are_named_as_ray_names_them(rayx_start):
    refs = [square.remote(i) for i in range(3)]
    counter = Counter.remote()
    inc = counter.inc.remote()
    named = square.options(name="custom").remote(4)
    assert rayx.get(refs + [inc, named]) == [0, 1, 4, 1, 16]
    ids = {ref.hex()[:32] for ref in refs}

    def found():
        rows = state.list_tasks(filters=[("name", "=", "square")])
        return ids <= {row["task_id"] for row in rows} and rows
    assert wait_for(found)
    creation = counter._actor_id.hex()
    assert wait_for(lambda: {(t["name"], t["type"]) for t in state.list_tasks(
        filters=[("actor_id", "=", creation)])} == {("Counter.__init__", "ACTOR_CREATION_TASK"),
                                                     ("Counter.inc", "ACTOR_TASK")})
    assert wait_for(lambda: len(state.list_tasks(filters=[("name", "=", "custom")])) == 1)
    actors = state.list_actors(filters=[("actor_id", "=", creation)])
    assert [a["class_name"] for a in actors] == ["Counter"]


def test_errors_name_the_function(rayx_start):
    @rayx.remote
    def broken():
        raise ValueError("no")

    with pytest.raises(ValueError) as info:
        rayx.get(broken.remote())
    assert "in test_errors_name_the_function.<locals>.broken()" in str(info.value)


# ------------------------------------------------------ max_pending_calls

@rayx.remote(max_pending_calls=2)
class Gate:
    def __init__(self):
        self.open = threading.Event()

    def wait(self):
        return self.open.wait(60)

    def release(self):
        self.open.set()


def test_max_pending_calls_raises_beyond_the_limit(rayx_start):
    gate = Gate.options(max_concurrency=4).remote()
    first = [gate.wait.remote(), gate.wait.remote()]
    with pytest.raises(PendingCallsLimitExceeded, match="Gate"):
        gate.release.remote()
    # The limit is per handle: a copy of the handle (here one that went through a
    # task and back) counts its own calls.
    copy = rayx.get(_handle_copy.remote([gate]), timeout=60)
    rayx.get(copy.release.remote(), timeout=60)
    assert rayx.get(first, timeout=60) == [True, True]
    # Their results are in: no longer pending, so calls go through again.
    assert rayx.get([gate.wait.remote(), gate.wait.remote()], timeout=60) == [True, True]


@rayx.remote
def _handle_copy(handles):
    return handles[0]


# ------------------------------------------------------ concurrency groups

@rayx.remote(concurrency_groups={"io": 2})
class Grouped:
    def __init__(self):
        self.pair = threading.Barrier(2)
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.unblock = threading.Event()

    @rayx.method(concurrency_group="io")
    def io(self):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.pair.wait(60)       # only returns once two io calls run at once
        finally:
            with self.lock:
                self.running -= 1
        return True

    def blocked(self):
        return self.unblock.wait(60)

    def stats(self):
        return self.peak

    def open(self):
        self.unblock.set()


def test_concurrency_groups_threaded(rayx_start):
    actor = Grouped.remote()
    assert rayx.get([actor.io.remote() for _ in range(4)], timeout=90) == [True] * 4
    assert rayx.get(actor.stats.remote(), timeout=30) == 2
    # The default group (max_concurrency 1) is busy; the io group still runs.
    blocked = actor.blocked.remote()
    assert rayx.get([actor.io.remote(), actor.io.remote()], timeout=90) == [True, True]
    # .options(concurrency_group=...) moves a call into a group.
    opener = actor.open.options(concurrency_group="io").remote()
    assert rayx.get([blocked, opener], timeout=90) == [True, None]


@rayx.remote(concurrency_groups={"io": 2})
class AsyncGrouped:
    def __init__(self):
        self.running = 0
        self.peak = 0
        self.release = None

    @rayx.method(concurrency_group="io")
    async def io(self):
        if self.release is None:
            self.release = asyncio.Event()
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running == 2:
            self.release.set()
        await asyncio.wait_for(self.release.wait(), 60)
        self.running -= 1
        if self.running == 0:
            self.release = None
        return self.peak

    async def peak_seen(self):
        return self.peak


def test_concurrency_groups_async(rayx_start):
    actor = AsyncGrouped.remote()
    # Without the group's limit all four would run at once (async default: 1000).
    assert max(rayx.get([actor.io.remote() for _ in range(4)], timeout=90)) == 2
    assert rayx.get(actor.peak_seen.remote(), timeout=30) == 2


def test_concurrency_group_must_be_declared(rayx_start):
    @rayx.remote
    class Undeclared:
        @rayx.method(concurrency_group="io")
        def f(self):
            pass

    with pytest.raises(ValueError, match="concurrency_group 'io'"):
        Undeclared.remote()
    actor = Grouped.remote()
    with pytest.raises(ValueError, match="'nope'.*\\['io'\\]"):
        rayx.get(actor.stats.options(concurrency_group="nope").remote(), timeout=30)
    assert rayx.get(actor.stats.remote(), timeout=30) == 0


def test_memory_and_accelerator_type_are_scheduling_requests(rayx_start):
    @rayx.remote(memory=50 << 20)
    def small():
        return "ran"

    # Nodes offer "memory" (bytes), so a task that reserves some is not infeasible.
    assert rayx.get(small.remote(), timeout=60) == "ran"
    assert rayx.cluster_resources()["memory"] > 0
    # As Ray: a sliver of the resource that nodes with that accelerator declare.
    assert options.resource_request({"accelerator_type": "H100"}, 1) == {
        "CPU": 1.0, "accelerator_type:H100": 0.001}
