"""Tasks, futures, get/put/wait and errors on a real one-node cluster."""
import os
import sys
import time

import numpy as np
import pytest

import rayx
from rayx.exceptions import GetTimeoutError, RayTaskError
from rayx.runtime import context


@rayx.remote
def add_one(x):
    return x + 1


@rayx.remote
def add(a, b):
    return a + b


@rayx.remote(num_returns=3)
def three(x):
    return x, x * 2, x * 3


@rayx.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def test_simple_task(rayx_start):
    ref = add_one.remote(1)
    assert isinstance(ref, rayx.ObjectRef)
    assert rayx.get(ref) == 2


def test_many_tasks_and_list_get(rayx_start):
    refs = [add_one.remote(i) for i in range(500)]
    assert rayx.get(refs) == [i + 1 for i in range(500)]


def test_kwargs_and_defaults(rayx_start):
    @rayx.remote
    def f(a, b=10, *, c=100):
        return a + b + c

    assert rayx.get(f.remote(1)) == 111
    assert rayx.get(f.remote(1, 2, c=3)) == 6
    assert rayx.get(f.remote(a=5, b=5, c=5)) == 15


def test_num_returns(rayx_start):
    a, b, c = three.remote(2)
    assert rayx.get([a, b, c]) == [2, 4, 6]
    refs = add_one.options(num_returns=1).remote(1)
    assert rayx.get(refs) == 2


def test_num_returns_mismatch_is_an_error(rayx_start):
    @rayx.remote(num_returns=2)
    def one_value():
        return 1

    a, b = one_value.remote()
    with pytest.raises(ValueError, match="num_returns=2"):
        rayx.get(a)


def test_object_ref_arguments_are_resolved(rayx_start):
    x = add_one.remote(1)
    y = add.remote(x, add_one.remote(10))
    assert rayx.get(y) == 13
    z = add.remote(rayx.put(5), b=rayx.put(6))
    assert rayx.get(z) == 11


def test_refs_inside_containers_stay_refs(rayx_start):
    @rayx.remote
    def inspect(container):
        ref = container[0]
        assert isinstance(ref, rayx.ObjectRef)
        return rayx.get(ref) * 10

    inner = add_one.remote(4)
    assert rayx.get(inspect.remote([inner])) == 50


def test_put_get_roundtrip(rayx_start):
    for value in [0, "text", b"bytes", None, {"a": [1, 2, (3, 4)]}, 1.5, list(range(1000))]:
        assert rayx.get(rayx.put(value)) == value


def test_put_numpy_is_zero_copy_and_read_only(rayx_start):
    arr = np.arange(1_000_000, dtype=np.float64)
    ref = rayx.put(arr)
    out = rayx.get(ref)
    assert np.array_equal(out, arr)
    assert not out.flags.writeable
    worker = context.core_worker()
    base, capacity = worker.arena.base_address, worker.arena.capacity
    address = out.__array_interface__["data"][0]
    assert base <= address < base + capacity


def test_large_task_result_zero_copy(rayx_start):
    @rayx.remote
    def make(n):
        return np.ones(n, dtype=np.uint8)

    out = rayx.get(make.remote(5_000_000))
    assert out.sum() == 5_000_000
    worker = context.core_worker()
    address = out.__array_interface__["data"][0]
    assert worker.arena.base_address <= address < worker.arena.base_address + worker.arena.capacity


def test_large_argument(rayx_start):
    @rayx.remote
    def total(a):
        return int(a.sum())

    arr = np.ones(2_000_000, dtype=np.int64)
    assert rayx.get(total.remote(arr)) == 2_000_000


def test_get_timeout(rayx_start):
    ref = sleep_then.remote(3, "late")
    with pytest.raises(GetTimeoutError):
        rayx.get(ref, timeout=0.1)
    with pytest.raises(TimeoutError):
        rayx.get(ref, timeout=0.1)
    assert rayx.get(ref, timeout=60) == "late"


def test_wait_keeps_input_order(rayx_start):
    slow = sleep_then.remote(2, "slow")
    fast = [add_one.remote(i) for i in range(3)]
    refs = [slow] + fast
    ready, not_ready = rayx.wait(refs, num_returns=3, timeout=30)
    assert ready == fast
    assert not_ready == [slow]
    ready, not_ready = rayx.wait(refs, num_returns=4, timeout=0.01)
    assert slow in not_ready or slow in ready
    ready, not_ready = rayx.wait(refs, num_returns=4)
    assert ready == refs and not_ready == []


def test_wait_timeout_returns_what_is_ready(rayx_start):
    slow = sleep_then.remote(3, 1)
    ready, not_ready = rayx.wait([slow], timeout=0.1)
    assert ready == [] and not_ready == [slow]


def test_wait_bad_input(rayx_start):
    ref = rayx.put(1)
    with pytest.raises(TypeError):
        rayx.wait(ref)
    with pytest.raises(ValueError):
        rayx.wait([ref], num_returns=2)
    with pytest.raises(ValueError):
        rayx.wait([ref, ref])


class CustomError(Exception):
    pass


@rayx.remote
def fails(message):
    raise CustomError(message)


def test_error_is_instance_of_user_class_with_traceback(rayx_start):
    with pytest.raises(CustomError) as info:
        rayx.get(fails.remote("boom"))
    err = info.value
    assert isinstance(err, RayTaskError)
    text = str(err)
    assert "boom" in text
    assert "raise CustomError(message)" in text  # the remote traceback
    assert "fails" in text


def test_error_propagates_through_dependents(rayx_start):
    bad = fails.remote("upstream")
    downstream = add_one.remote(add_one.remote(bad))
    with pytest.raises(CustomError, match="upstream"):
        rayx.get(downstream)


def test_unserializable_argument(rayx_start):
    import threading
    lock = threading.Lock()
    with pytest.raises(TypeError, match="argument 0"):
        add_one.remote(lock)


def test_calling_remote_function_directly_fails(rayx_start):
    with pytest.raises(TypeError, match="remote"):
        add_one(1)


def test_bad_options(rayx_start):
    with pytest.raises(ValueError, match="num_cpu"):
        add_one.options(num_cpu=1)
    with pytest.raises(ValueError, match="num_cpus"):
        add_one.options(num_cpus=-1)
    with pytest.raises(ValueError, match="num_cpus"):
        rayx.remote(resources={"CPU": 1})(lambda: 1)


def test_nested_tasks(rayx_start):
    @rayx.remote
    def fan_out(n):
        return sum(rayx.get([add_one.remote(i) for i in range(n)]))

    assert rayx.get(fan_out.remote(10)) == sum(range(1, 11))


def test_recursive_nesting_does_not_deadlock(rayx_start):
    @rayx.remote
    def depth(n):
        if n == 0:
            return 0
        return 1 + rayx.get(depth.remote(n - 1))

    assert rayx.get(depth.remote(6), timeout=120) == 6


def test_put_inside_task_returned_as_ref(rayx_start):
    @rayx.remote
    def make_refs(n):
        return [rayx.put(i) for i in range(n)]

    refs = rayx.get(make_refs.remote(100))
    assert rayx.get(refs) == list(range(100))


def test_retry_exceptions(rayx_start, tmp_path):
    marker = tmp_path / "attempts"

    @rayx.remote(max_retries=2, retry_exceptions=True)
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            raise ValueError("not yet")
        return "ok"

    assert rayx.get(flaky.remote(str(marker))) == "ok"
    assert marker.read_text() == "xxx"


def test_stdout_is_forwarded_with_prefix(rayx_start, capfd):
    @rayx.remote
    def chatty():
        print("hello from a task")
        print("to stderr", file=sys.stderr)
        return os.getpid()

    pid = rayx.get(chatty.remote())
    deadline = time.time() + 10
    out = err = ""
    while time.time() < deadline:
        captured = capfd.readouterr()
        out += captured.out
        err += captured.err
        if "hello from a task" in out and "to stderr" in err:
            break
        time.sleep(0.05)
    assert f"(chatty pid={pid}) hello from a task" in out
    assert f"(chatty pid={pid}) to stderr" in err


def test_a_burst_of_submissions_is_coalesced(rayx_start):
    # SPREAD tasks go through the raylet (not to leased workers): the raylet socket's writes.
    conn = context.core_worker().conn
    writes, messages = conn.writes, conn.messages_sent
    spread = add_one.options(scheduling_strategy="SPREAD")
    refs = [spread.remote(i) for i in range(10_000)]
    assert rayx.get(refs[-1], timeout=300) == 10_000
    burst_writes = conn.writes - writes
    assert conn.messages_sent - messages >= 10_000
    assert burst_writes < 1_000, f"{burst_writes} writes for 10,000 submissions"
    del refs


def test_cancel_pending_running_and_forced(rayx_start):
    from rayx.exceptions import TaskCancelledError

    @rayx.remote(max_retries=3)
    def spin(seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            time.sleep(0.01)
        return "finished"

    running = [spin.remote(60), spin.remote(60)]       # both CPUs busy
    queued = spin.remote(60)                            # waits for a CPU
    time.sleep(1.0)
    rayx.cancel(queued)
    with pytest.raises(TaskCancelledError):
        rayx.get(queued, timeout=60)
    rayx.cancel(running[0])
    with pytest.raises(TaskCancelledError):
        rayx.get(running[0], timeout=60)
    rayx.cancel(running[1], force=True)
    with pytest.raises(TaskCancelledError):
        rayx.get(running[1], timeout=60)
    # The node carries on (a killed worker is replaced, nothing was retried).
    assert rayx.get(add_one.remote(1), timeout=60) == 2
    with pytest.raises(TypeError):
        rayx.cancel("not a ref")


def test_waiting_down_a_list_needs_no_round_trips_once_notified(rayx_start):
    # Through the raylet (SPREAD: not on leased workers, whose results come to us directly).
    refs = [add_one.options(scheduling_strategy="SPREAD").remote(i) for i in range(50)]
    ready, rest = rayx.wait(refs, num_returns=1, timeout=60)
    worker = context.core_worker()
    deadline = time.time() + 60
    while not all(worker.cache.is_ready(r.binary()) for r in rest) and time.time() < deadline:
        time.sleep(0.05)        # READY_NOTEs for the rest arrive as they finish
    writes = worker.conn.writes
    while rest:
        ready, rest = rayx.wait(rest, num_returns=1, timeout=60)
        assert len(ready) == 1
    assert worker.conn.writes == writes
    assert rayx.get(refs) == [i + 1 for i in range(50)]
