"""Objects live exactly as long as a ref to them does: whatever made them (a put,
small or in the arena; a task on the raylet path or a leased worker; a direct
actor call; a result registered only once its ref escaped; an object holding
refs), the raylet frees them, and the caller forgets their bytes, once the last
ref goes, even when the ref is dropped before the next flush to the raylet.
Spill files of freed objects go too, and a node's spill directory when it stops."""
import os
import pickle
import time

import numpy as np
import pytest

import rayx
from rayx.runtime import context
from helpers import wait_for

ARENA_SIZED = 300_000        # bytes of a value that goes into the arena (> 100 KiB)


def _core():
    return context.core_worker()


def _status():
    return _core().request("status")


def _raylet_objects():
    return _status()["objects_detail"]["objects"]


def _arena_objects():
    return _status()["arena"]["num_objects"]


def _cached_here():
    """Objects whose bytes or location this process keeps."""
    core = _core()
    return len(core.cache) + core.pushed.unregistered_count()


def _assert_back_to(baseline):
    """Every count of ``baseline`` returns there (refs dropped are reported within ~0.1 s)."""
    now = {}

    def settled():
        now.update(raylet=_raylet_objects(), arena=_arena_objects(), cached=_cached_here())
        return all(now[key] <= value for key, value in baseline.items())
    assert wait_for(settled, timeout=60), f"still held: {now}, baseline {baseline}"


def _baseline():
    return dict(raylet=_raylet_objects(), arena=_arena_objects(), cached=_cached_here())


@rayx.remote
def small():
    return b"s" * 10


@rayx.remote
def large():
    return np.zeros(ARENA_SIZED // 8)


@rayx.remote
def total(x):
    return int(np.asarray(x).sum())


@rayx.remote
def read_later(box, seconds):
    """Gets the ref inside ``box`` only after ``seconds``."""
    time.sleep(seconds)
    return int(np.asarray(rayx.get(box[0], timeout=60)).sum())


@rayx.remote
class Maker:
    def small(self):
        return b"m" * 10

    def large(self):
        return np.zeros(ARENA_SIZED // 8)

    def boxed(self, ref):
        return [ref]

    def total(self, x):
        return int(np.asarray(x).sum())


@pytest.fixture(scope="module")
def maker(rayx_start):
    actor = Maker.remote()
    rayx.get(actor.small.remote(), timeout=60)      # alive, and called directly
    rayx.get([small.remote() for _ in range(4)], timeout=60)   # leases in use
    return actor


def test_dropped_small_puts_are_freed(rayx_start):
    baseline = _baseline()
    for _ in range(1000):
        rayx.put(b"x" * 1024)
    _assert_back_to(baseline)


def test_dropped_large_puts_free_the_arena(rayx_start):
    baseline = _baseline()
    for i in range(300):
        rayx.put(np.full(ARENA_SIZED, i % 256, dtype=np.uint8))
    _assert_back_to(baseline)
    assert _status()["spilled_bytes"] == 0


def test_held_objects_stay_while_dropped_ones_go(rayx_start):
    baseline = _baseline()
    kept = []
    for i in range(200):
        small_ref = rayx.put(i)
        large_ref = rayx.put(np.full(ARENA_SIZED, i % 256, dtype=np.uint8))
        if i % 50 == 0:
            kept.append((i, small_ref, large_ref))
    del small_ref, large_ref
    assert wait_for(lambda: _raylet_objects() <= baseline["raylet"] + 2 * len(kept), timeout=60)
    for i, small_ref, large_ref in kept:
        assert rayx.get(small_ref, timeout=60) == i
        assert rayx.get(large_ref, timeout=60)[-1] == i % 256
    del kept, small_ref, large_ref
    _assert_back_to(baseline)


def test_dropped_task_results_are_freed(rayx_start, maker):
    baseline = _baseline()
    for _ in range(300):
        small.remote()                                    # leased worker
        small.options(scheduling_strategy="SPREAD").remote()   # raylet path
    for _ in range(50):
        large.remote()
        large.options(scheduling_strategy="SPREAD").remote()
    _assert_back_to(baseline)


def test_dropped_actor_call_results_are_freed(rayx_start, maker):
    baseline = _baseline()
    for _ in range(300):
        maker.small.remote()
    for _ in range(50):
        maker.large.remote()
    _assert_back_to(baseline)


def test_results_registered_when_their_ref_escapes_are_freed(rayx_start, maker):
    baseline = _baseline()
    for _ in range(100):
        pickle.dumps(maker.small.remote())               # escapes before the result is here
        ref = small.remote()
        rayx.get(ref, timeout=60)
        pickle.dumps(ref)                                # escapes after it arrived
        del ref
    _assert_back_to(baseline)


def test_objects_holding_refs_are_freed_with_what_they_hold(rayx_start, maker):
    baseline = _baseline()
    for _ in range(50):
        rayx.put([rayx.put(b"inner"), rayx.put(np.zeros(ARENA_SIZED // 8))])
        maker.boxed.remote(rayx.put(b"inner"))
    box = rayx.put([rayx.put(b"kept inside")])
    _assert_back_to({key: value + (2 if key != "arena" else 0) for key, value in baseline.items()})
    assert rayx.get(rayx.get(box, timeout=60)[0], timeout=60) == b"kept inside"
    del box
    _assert_back_to(baseline)


def test_large_arguments_are_freed_after_their_task(rayx_start, maker):
    baseline = _baseline()
    value = np.ones(ARENA_SIZED // 8)
    results = [total.remote(value) for _ in range(20)] + [maker.total.remote(value) for _ in range(20)]
    assert rayx.get(results, timeout=120) == [ARENA_SIZED // 8] * 40
    del results
    _assert_back_to(baseline)


@pytest.mark.parametrize("make", [lambda: rayx.put(np.ones(100)), lambda: rayx.put(np.ones(ARENA_SIZED // 8))],
                         ids=["small", "large"])
def test_a_ref_dropped_while_its_task_runs_is_kept_until_it_ends(rayx_start, maker, make):
    baseline = _baseline()
    ref = make()
    expected = int(np.asarray(rayx.get(ref, timeout=60)).sum())
    results = [read_later.remote([ref], 1.0),
               read_later.options(scheduling_strategy="SPREAD").remote([ref], 1.0)]
    del ref
    assert rayx.get(results, timeout=120) == [expected, expected]
    del results
    _assert_back_to(baseline)
