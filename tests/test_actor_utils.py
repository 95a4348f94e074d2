"""Tests of the actor utilities (issue 4): ``rayx.util.ActorPool`` (map,
map_unordered, submit/get_next/get_next_unordered, has_next, has_free,
pop_idle, push) and ``rayx.util.queue.Queue`` (blocking and non-blocking
put/get, timeouts raising Empty/Full, maxsize, batches, use from tasks and
actors), on one shared 2-CPU node.
"""
import queue as stdlib_queue
import time

import pytest

import rayx
from rayx.util import ActorPool
from rayx.util.queue import Empty, Full, Queue


@rayx.remote(num_cpus=0)
class Doubler:
    def double(self, x):
        return 2 * x

    def slow_double(self, x):
        time.sleep(x * 0.1)
        return 2 * x

    @rayx.method(num_returns=2)
    def pair(self, x):
        return x, -x


@pytest.fixture(scope="module")
def actors(rayx_start):
    handles = [Doubler.remote(), Doubler.remote()]
    yield handles
    for handle in handles:
        rayx.kill(handle)


# ------------------------------------------------------------ ActorPool


def test_pool_map_ordered(actors):
    pool = ActorPool(actors)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == [2 * i for i in range(10)]
    # results come back in order even when later ones finish first
    assert list(pool.map(lambda a, v: a.slow_double.remote(v), [5, 1, 3, 0])) == [10, 2, 6, 0]
    assert not pool.has_next()


def test_pool_map_unordered(actors):
    pool = ActorPool(actors)
    out = list(pool.map_unordered(lambda a, v: a.slow_double.remote(v), [4, 0, 2, 1, 3]))
    assert sorted(out) == [0, 2, 4, 6, 8]


def test_pool_submit_and_get_next(actors):
    pool = ActorPool(actors)
    assert pool.has_free() and not pool.has_next()
    for value in range(5):
        pool.submit(lambda a, v: a.double.remote(v), value)
    assert not pool.has_free()          # both actors busy, 3 submissions queued
    assert pool.has_next()
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]
    assert not pool.has_next()
    assert pool.has_free()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_pool_get_next_unordered(actors):
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.slow_double.remote(v), 10)
    pool.submit(lambda a, v: a.double.remote(v), 1)
    assert pool.get_next_unordered(timeout=60) == 2
    assert pool.get_next_unordered(timeout=60) == 20
    assert not pool.has_next()


def test_pool_timeouts(actors):
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.slow_double.remote(v), 10)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    assert pool.has_next()
    # given up: the pool forgets it and its actor is free again
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next()
    assert pool.has_free()


def test_pool_get_next_after_unordered(actors):
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.slow_double.remote(v), 10)
    pool.submit(lambda a, v: a.double.remote(v), 1)
    assert pool.get_next_unordered(timeout=60) == 2
    with pytest.raises(ValueError):
        pool.get_next()
    assert pool.get_next_unordered(timeout=60) == 20


def test_pool_multiple_returns(actors):
    pool = ActorPool(actors)
    out = list(pool.map(lambda a, v: a.pair.remote(v), [1, 2]))
    assert out == [[1, -1], [2, -2]]


def test_pool_pop_idle_and_push(actors):
    pool = ActorPool(list(actors))
    a = pool.pop_idle()
    b = pool.pop_idle()
    assert {a, b} == set(actors)
    assert pool.pop_idle() is None and not pool.has_free()
    pool.submit(lambda actor, v: actor.double.remote(v), 21)    # queued: no actor
    assert not pool.has_next()
    pool.push(a)                                                 # picks up the queued work
    assert pool.has_next()
    assert pool.get_next(timeout=60) == 42
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a)
    pool.push(b)
    assert list(pool.map(lambda actor, v: actor.double.remote(v), [1, 2, 3])) == [2, 4, 6]


def test_pool_map_drops_old_results(actors):
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.double.remote(v), 100)
    assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2])) == [2, 4]


def test_pool_task_errors(actors):
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.double.remote(v), None)
    with pytest.raises(TypeError):
        pool.get_next(timeout=60)
    assert pool.has_free()


# ----------------------------------------------------------------- Queue


def test_queue_basic(rayx_start):
    q = Queue()
    assert q.empty() and q.qsize() == 0 and len(q) == 0 and not q.full()
    for i in range(5):
        q.put(i)
    assert q.qsize() == 5 and q.size() == 5
    assert [q.get() for _ in range(5)] == list(range(5))
    assert q.empty()
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)
    assert issubclass(Empty, stdlib_queue.Empty) and issubclass(Full, stdlib_queue.Full)
    q.shutdown()


def test_queue_maxsize_and_timeouts(rayx_start):
    q = Queue(maxsize=2)
    q.put_nowait("a")
    q.put("b")
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait("c")
    with pytest.raises(Full):
        q.put("c", timeout=0.2)
    with pytest.raises(Full):
        q.put("c", block=False)
    assert q.get(timeout=1) == "a"
    q.put("c", timeout=5)
    assert [q.get_nowait(), q.get_nowait()] == ["b", "c"]
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    q.shutdown()


def test_queue_batches(rayx_start):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full):
        q.put_nowait_batch([3, 4])
    assert q.qsize() == 2          # all or nothing
    with pytest.raises(Empty):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(2) == [1, 2]
    q.shutdown(force=True)


def test_queue_blocking_get_waits_for_put(rayx_start):
    q = Queue()

    @rayx.remote
    def producer(queue, n):
        time.sleep(0.3)
        for i in range(n):
            queue.put(i)
        return "done"

    ref = producer.remote(q, 3)
    assert [q.get(timeout=60) for _ in range(3)] == [0, 1, 2]
    assert rayx.get(ref, timeout=60) == "done"
    q.shutdown()


def test_queue_between_actors(rayx_start):
    q = Queue(maxsize=1)

    @rayx.remote(num_cpus=0)
    class Consumer:
        def __init__(self, queue):
            self.queue = queue

        def take(self, n):
            return [self.queue.get(timeout=60) for _ in range(n)]

    c = Consumer.remote(q)
    ref = c.take.remote(4)
    for i in range(4):
        q.put(i, timeout=60)        # blocks while the consumer has not taken the last one
    assert rayx.get(ref, timeout=60) == [0, 1, 2, 3]
    rayx.kill(c)
    q.shutdown()


def test_queue_async_api(rayx_start):
    import asyncio
    q = Queue()

    async def main():
        await q.put_async(1)
        await q.put_async(2)
        first = await q.get_async()
        second = await q.get_async(timeout=5)
        try:
            await q.get_async(timeout=0.1)
        except Empty:
            return first, second, "empty"

    assert asyncio.run(main()) == (1, 2, "empty")
    q.shutdown()


def test_queue_actor_options(rayx_start):
    q = Queue(actor_options={"name": "shared-queue"})
    q.put("hello")
    handle = rayx.get_actor("shared-queue")
    assert rayx.get(handle.get_nowait.remote(), timeout=60) == "hello"
    q.shutdown()
