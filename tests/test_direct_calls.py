"""Direct actor calls (rayx.runtime.actor_calls): a caller on the actor's node talks to
the actor's worker over its own socket. These tests check that calls really
take that path, and everything around it: arguments of every kind, results
used elsewhere (tasks, other actors, other processes), reference counting,
order, threads, and what happens when the actor's process dies.

Real node, real processes; generous timeouts, no wall-clock assertions.
"""
import os
import signal
import threading
import time

import numpy as np
import pytest

import rayx
from helpers import wait_for
from rayx.runtime import context
from rayx.exceptions import ActorDiedError, RayTaskError


@rayx.remote
class Echo:
    def __init__(self):
        self.seen = []

    def echo(self, value):
        return value

    def record(self, value):
        self.seen.append(value)
        return len(self.seen)

    def seen_values(self):
        return list(self.seen)

    def pid(self):
        return os.getpid()

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def big(self, n):
        return np.arange(n, dtype=np.int64)

    def fail(self):
        raise ValueError("failed on purpose")


@rayx.remote
def plus_one(x):
    return x + 1


@rayx.remote
def boom():
    raise KeyError("from a task")


def _channel(handle):
    return context.core_worker().actor_calls.channels.get(handle._actor_id)


def _raylet_objects():
    return context.core_worker().request("status")["objects_detail"]["objects"]


def test_calls_go_direct_and_keep_order(rayx_start):
    actor = Echo.remote()
    refs = [actor.record.remote(i) for i in range(2000)]
    assert rayx.get(refs) == list(range(1, 2001))
    assert rayx.get(actor.seen_values.remote()) == list(range(2000))
    channel = _channel(actor)
    assert channel.mode == "direct" and channel.link is not None
    assert not context.core_worker().pushed.in_flight()


def test_arguments_of_every_kind(rayx_start):
    actor = Echo.remote()
    small = rayx.put({"a": 1})
    large = rayx.put(np.ones(500_000))
    assert rayx.get(actor.echo.remote(small)) == {"a": 1}
    assert rayx.get(actor.echo.remote(large)).sum() == 500_000
    # Not ready when the call is made: the call (and the ones after it) wait for it.
    slow = plus_one.remote(rayx.get(actor.sleep.remote(0)) + 41)
    first = actor.echo.remote(slow)
    second = actor.record.remote("after")
    assert rayx.get([first, second]) == [42, 1]
    # A result of another actor's direct call.
    other = Echo.remote()
    assert rayx.get(actor.echo.remote(other.echo.remote("relayed"))) == "relayed"
    # Refs inside containers stay refs, and stay alive.
    inner = rayx.put("inside")
    box = actor.echo.remote([inner])
    del inner
    assert rayx.get(rayx.get(box)[0]) == "inside"


def test_error_argument_fails_the_call_with_that_error(rayx_start):
    actor = Echo.remote()
    with pytest.raises(KeyError) as info:
        rayx.get(actor.echo.remote(boom.remote()))
    assert "from a task" in str(info.value)
    with pytest.raises(RayTaskError) as info:
        rayx.get(actor.fail.remote())
    assert "failed on purpose" in str(info.value) and isinstance(info.value, ValueError)


def test_results_work_everywhere(rayx_start):
    actor = Echo.remote()
    ref = actor.echo.remote(10)
    assert rayx.get(plus_one.remote(ref)) == 11               # a task on the raylet path
    ready, _ = rayx.wait([actor.sleep.remote(0.2)], timeout=30)
    assert len(ready) == 1
    array = rayx.get(actor.big.remote(300_000))                # a result in the arena
    assert array[-1] == 299_999 and not array.flags.writeable
    assert rayx.get(plus_one.remote(actor.big.remote(5)))[-1] == 5


def test_dropped_results_are_freed(rayx_start):
    actor = Echo.remote()
    rayx.get(actor.echo.remote(0))
    time.sleep(0.3)
    before = _raylet_objects()
    for _ in range(5):
        refs = [actor.echo.remote(i) for i in range(200)]
        rayx.get(refs)
        del refs
        for _ in range(200):
            actor.echo.remote("never read")       # results dropped at once
    arena = [actor.big.remote(200_000) for _ in range(3)]
    rayx.get(arena)
    del arena
    rayx.get(actor.echo.remote(0))
    assert wait_for(lambda: _raylet_objects() <= before + 2)


def test_threads_share_a_channel(rayx_start):
    actor = Echo.remote()
    results = {}

    def caller(k):
        results[k] = rayx.get([actor.echo.remote((k, i)) for i in range(300)])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(results[k] == [(k, i) for i in range(300)] for k in range(4))


def test_worker_callers_go_direct(rayx_start):
    actor = Echo.remote()

    @rayx.remote
    def use(handle):
        from rayx.runtime import context as worker_context
        values = rayx.get([handle.record.remote(i) for i in range(50)])
        channel = worker_context.core_worker().actor_calls.channels[handle._actor_id]
        return values[-1], channel.mode

    last, mode = rayx.get(use.remote(actor), timeout=120)
    assert mode == "direct" and last == 50


def test_actor_waiting_longer_than_its_local_wait(rayx_start):
    # A worker process waits a few ms for direct results by itself, then through
    # the raylet: the results it still waits for must get registered there.
    server = Echo.remote()

    @rayx.remote
    class Client:
        def run(self, handle, rounds):
            total = 0
            for _ in range(rounds):
                refs = [handle.sleep.remote(0.001) for _ in range(20)]
                total += len(rayx.get(refs, timeout=60))
            return total

    client = Client.remote()
    assert rayx.get(client.run.remote(server, 10), timeout=120) == 200
