"""Tasks on leased workers (``rayx.runtime.leased_tasks``): the raylet lends workers and
sees no message per task; arguments and results of every kind; leases go back
when idle; nested tasks that block; retries and failures when a leased worker
dies; cancel.

Real nodes and processes; generous timeouts, no wall-clock assertions.
"""
import os
import signal
import time

import numpy as np
import pytest

import rayx
from rayx.runtime import context
from rayx.exceptions import RayTaskError, TaskCancelledError, WorkerCrashedError

from helpers import wait_for


@rayx.remote
def add_one(x):
    return x + 1


@rayx.remote
def echo(value):
    return value


@rayx.remote
def pid_of():
    return os.getpid()


@rayx.remote
def total(values):
    return sum(rayx.get(list(values)))


@rayx.remote
def fail(message):
    raise ValueError(message)


@rayx.remote
class Holder:
    def read(self, value):
        return value


def _leases():
    return context.core_worker().leases


def _leased_workers():
    return sum(len(shape.leases) for shape in _leases().shapes.values())


def _idle_again():
    wait_for(lambda: _leased_workers() == 0, timeout=30)
    wait_for(lambda: rayx.available_resources().get("CPU") == 2, timeout=30)


def test_tasks_take_leases_and_the_raylet_sees_no_message_per_task(rayx_start):
    core = context.core_worker()
    assert rayx.get(add_one.remote(0)) == 1
    messages = core.conn.messages_sent
    refs = [add_one.remote(i) for i in range(3000)]
    assert rayx.get(refs, timeout=120) == [i + 1 for i in range(3000)]
    assert core.conn.messages_sent - messages < 300
    # Both workers were leased while the burst ran; idle leases go back to the raylet.
    _idle_again()


def test_arguments_and_results_of_every_kind(rayx_start):
    big = np.arange(200_000, dtype=np.int64)            # in the arena
    big_ref = rayx.put(big)
    small_ref = rayx.put({"k": 1})
    first = add_one.remote(1)
    assert rayx.get(first) == 2
    assert rayx.get(echo.remote(small_ref)) == {"k": 1}
    assert int(rayx.get(echo.remote(big_ref)).sum()) == int(big.sum())
    assert rayx.get(add_one.remote(first)) == 3                 # a leased result as argument
    assert rayx.get(add_one.remote(add_one.remote(5))) == 7      # not ready yet: via the raylet
    assert rayx.get(total.remote([first, small_ref and first])) == 4   # refs inside a container
    big_result = echo.remote(big)                                 # an arena result
    assert int(rayx.get(big_result).sum()) == int(big.sum())
    assert rayx.get(Holder.remote().read.remote(first)) == 2     # to an actor
    two = echo.options(num_returns=2).remote((1, 2))
    assert rayx.get(two) == [1, 2]
    assert echo.options(num_returns=0).remote(None) is None
    ready, _ = rayx.wait([add_one.remote(10)], num_returns=1, timeout=60)
    assert rayx.get(ready) == [11]
    inner = rayx.get(echo.remote([first]))[0]                     # a ref inside a result
    assert rayx.get(inner) == 2


def test_errors_reach_the_caller(rayx_start):
    with pytest.raises(ValueError, match="boom") as info:
        rayx.get(fail.remote("boom"), timeout=60)
    assert isinstance(info.value, RayTaskError)
    assert "raise ValueError(message)" in str(info.value)
    # A task whose argument is an error fails with it, without running.
    with pytest.raises(ValueError, match="first"):
        rayx.get(add_one.remote(fail.remote("first")), timeout=60)


def test_nested_tasks_that_block_do_not_deadlock(rayx_start):
    @rayx.remote
    def parent(i):
        return sum(rayx.get([add_one.remote(i), add_one.remote(i + 1)]))

    assert rayx.get([parent.remote(i) for i in range(12)], timeout=120) == \
        [2 * i + 3 for i in range(12)]
    _idle_again()


def test_scheduling_strategies_go_through_the_raylet(rayx_start):
    core = context.core_worker()
    messages = core.conn.messages_sent
    spread = add_one.options(scheduling_strategy="SPREAD")
    assert rayx.get([spread.remote(i) for i in range(200)], timeout=60) == [i + 1 for i in range(200)]
    assert core.conn.messages_sent - messages >= 200


def test_killed_leased_worker_is_retried_or_fails(rayx_start, tmp_path):
    @rayx.remote(max_retries=1)
    def wait_for_flag(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return os.getpid()

    @rayx.remote(max_retries=0)
    def sleeper():
        time.sleep(60)

    flag = tmp_path / "flag"
    ref = wait_for_flag.remote(str(flag))
    wait_for(lambda: _leased_workers() >= 1, timeout=30)
    lease = next(lease for shape in _leases().shapes.values() for lease in shape.leases)
    os.kill(lease.pid, signal.SIGKILL)
    flag.write_text("")
    assert rayx.get(ref, timeout=60) != lease.pid          # ran again on another worker

    doomed = sleeper.remote()
    wait_for(lambda: any(lease.inflight for shape in _leases().shapes.values()
                         for lease in shape.leases), timeout=30)
    lease = next(lease for shape in _leases().shapes.values() for lease in shape.leases if lease.inflight)
    os.kill(lease.pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError, match="sleeper"):
        rayx.get(doomed, timeout=60)
    assert rayx.get(add_one.remote(1), timeout=60) == 2
    _idle_again()


def test_cancel_leased_tasks(rayx_start):
    @rayx.remote
    def spin():
        while True:
            time.sleep(0.01)

    running = spin.remote()
    wait_for(lambda: _leased_workers() >= 1, timeout=30)
    forced = spin.remote()
    queued = spin.remote()          # both CPUs busy: waits with the caller (or the raylet)
    time.sleep(0.5)
    rayx.cancel(queued)
    with pytest.raises(TaskCancelledError):
        rayx.get(queued, timeout=60)
    rayx.cancel(running)
    with pytest.raises(TaskCancelledError):
        rayx.get(running, timeout=60)
    rayx.cancel(forced, force=True)
    with pytest.raises(TaskCancelledError):
        rayx.get(forced, timeout=60)
    assert rayx.get(add_one.remote(1), timeout=60) == 2
    _idle_again()


def test_a_driver_that_exits_holding_leases_gives_them_back(head_node):
    out = head_node.run_driver("""
        import os, time, rayx
        rayx.init(address="auto")
        @rayx.remote
        def busy():
            time.sleep(2)
        time.sleep(1)     # the node's workers are still starting
        refs = [busy.remote() for _ in range(4)]
        time.sleep(0.5)
        print("LEASED", sum(len(s.leases) for s in rayx.runtime.context.core_worker().leases.shapes.values()))
        os._exit(0)       # no shutdown: the raylet takes the leases back
    """)
    assert "LEASED 2" in out.stdout, out.stderr
    out = head_node.run_driver("""
        import time, rayx
        rayx.init(address="auto")
        deadline = time.time() + 60
        while rayx.available_resources().get("CPU") != 2 and time.time() < deadline:
            time.sleep(0.05)
        @rayx.remote
        def one():
            return 1
        print("CPU", rayx.available_resources().get("CPU"), "RESULT", rayx.get(one.remote(), timeout=60))
    """)
    assert "CPU 2.0 RESULT 1" in out.stdout, out.stderr


def test_wait_on_leased_results(rayx_start, tmp_path):
    @rayx.remote
    def wait_for_flag(path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return "flag"

    flag = tmp_path / "flag"
    blocked = wait_for_flag.remote(str(flag))
    quick = add_one.remote(1)
    ready, not_ready = rayx.wait([blocked, quick], num_returns=1, timeout=60)
    assert ready == [quick] and not_ready == [blocked]
    ready, not_ready = rayx.wait([blocked], num_returns=1, timeout=0.2)
    assert ready == [] and not_ready == [blocked]
    flag.write_text("")
    ready, not_ready = rayx.wait([blocked, quick], num_returns=2, timeout=60)
    assert ready == [blocked, quick] and not_ready == []
    assert rayx.get(blocked) == "flag"


def test_waiting_down_a_list_of_leased_results_needs_no_raylet(rayx_start):
    assert rayx.get(add_one.remote(0)) == 1
    core = context.core_worker()
    refs = [add_one.remote(i) for i in range(200)]
    writes = core.conn.writes
    rest = refs
    while rest:
        ready, rest = rayx.wait(rest, num_returns=1, timeout=60)
        assert len(ready) == 1
    assert rayx.get(refs) == [i + 1 for i in range(200)]
    # Only lease requests and returns went to the raylet, not one message per wait.
    assert core.conn.writes - writes < 20
