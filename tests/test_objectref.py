"""The compiled ObjectRef and reference counting (``rayx._core.objectref``):
refs count themselves in and out, pickle with the escape hook, compare by id;
only 0 -> held and held -> 0 transitions are reported, over any interleaving."""
import collections
import random

from rayx._core.objectref import apply_events


def test_transitions_only():
    counts = {b"held": 2}
    events = collections.deque([(b"new", 1), (b"new", 1), (b"held", -1), (b"gone", 1), (b"gone", -1)])
    added, removed = apply_events(events, counts)
    assert added == [b"new"] and removed == [] and not events
    assert counts == {b"held": 1, b"new": 2}
    events.extend([(b"held", -1), (b"new", -1), (b"new", -1), (b"new", 1)])
    added, removed = apply_events(events, counts)
    assert added == [] and removed == [b"held"]
    assert counts == {b"new": 1}


def test_matches_a_plain_count_over_random_batches():
    rng = random.Random(7)
    ids = [bytes([i]) * 20 for i in range(30)]
    counts, truth, held_before = {}, collections.Counter(), set()
    for _ in range(200):
        events = collections.deque()
        for _ in range(rng.randrange(50)):
            object_id = rng.choice(ids)
            if truth[object_id] and rng.random() < 0.5:
                truth[object_id] -= 1
                events.append((object_id, -1))
            else:
                truth[object_id] += 1
                events.append((object_id, 1))
        added, removed = apply_events(events, counts)
        held_now = {oid for oid, n in truth.items() if n > 0}
        assert set(added) == held_now - held_before
        assert set(removed) == held_before - held_now
        assert counts == {oid: n for oid, n in truth.items() if n > 0}
        held_before = held_now


def test_unique_ids_of_checks_types_and_duplicates():
    import pytest
    from rayx._core.objectref import unique_ids_of
    from rayx.object_ref import ObjectRef
    a, b = ObjectRef(b"a" * 20), ObjectRef(b"b" * 20)
    assert unique_ids_of([a, b], "wait") == [b"a" * 20, b"b" * 20]
    with pytest.raises(TypeError, match="expects ObjectRefs, got a int"):
        unique_ids_of([a, 3], "wait")
    with pytest.raises(ValueError, match="unique object refs"):
        unique_ids_of([a, b, a], "wait")



def test_refs_count_themselves_and_pickle_through_the_escape_hook():
    import gc
    import pickle
    import weakref
    from rayx import object_ref
    from rayx.object_ref import LocalRefCounter, ObjectRef
    assert object_ref.escape_hook() is None     # no cluster in this test
    counter = LocalRefCounter()
    counter.install()
    escaped = []
    object_ref.set_escape_hook(escaped.append)
    try:
        oid = b"r" * 20
        ref = ObjectRef(oid)
        assert counter.drain() == ([oid], [])
        twin = pickle.loads(pickle.dumps(ref))
        assert escaped == [oid] and twin == ref and hash(twin) == hash(ref) and twin is not ref
        assert ref != ObjectRef(b"s" * 20) and ref != oid
        assert ObjectRef(bytearray(oid)).binary() == oid
        probe = weakref.ref(ref)
        del ref, twin
        gc.collect()
        assert probe() is None
        added, removed = counter.drain()
        assert oid in removed
        assert repr(ObjectRef(oid)) == f"ObjectRef({oid.hex()})"
    finally:
        object_ref.set_escape_hook(None)
        counter.uninstall()


def test_pickled_refs_are_recorded_in_the_serialization_context():
    """rayx.serialization registers its current_context with the compiled class."""
    import pickle
    from rayx.runtime import serialization
    from rayx.object_ref import ObjectRef
    refs = [ObjectRef(b"n" * 20), ObjectRef(b"m" * 20)]
    with serialization.SerializationContext() as ctx:
        pickle.dumps(refs)
    assert ctx.nested_refs == [b"n" * 20, b"m" * 20]
    assert serialization.current_context() is None
    pickle.dumps(refs[0])               # outside a context: recorded nowhere
    assert ctx.nested_refs == [b"n" * 20, b"m" * 20]


def test_future_and_await_in_the_driver(shutdown_only):
    """rayx.runtime.driver registers future_of: a driver's ref resolves as a Future and by await."""
    import asyncio
    import rayx
    rayx.init(num_cpus=1, object_store_memory=64 << 20)
    ref = rayx.put({"v": 5})
    assert ref.future().result(timeout=60) == {"v": 5}

    async def wait_for_it():
        return await ref

    assert asyncio.run(wait_for_it()) == {"v": 5}


def test_refs_count_themselves_in_debug_counters():
    from rayx._core.objectref import debug_counters
    from rayx.object_ref import ObjectRef
    before = debug_counters()
    refs = [ObjectRef(b"c" * 20), ObjectRef.counted_already(b"d" * 20)]
    during = debug_counters()
    del refs
    after = debug_counters()
    assert during["refs_made"] - before["refs_made"] == 2
    assert after["refs_freed"] - before["refs_freed"] == 2


def test_compiled_modules_import_no_runtime_module():
    """rayx._core is below the runtime: its modules reach other rayx._core modules by
    cimport and import nothing of rayx but rayx.exceptions."""
    import glob
    import os
    import re
    core = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rayx", "_core")
    for path in glob.glob(os.path.join(core, "*.pyx")) + glob.glob(os.path.join(core, "*.pxd")):
        with open(path) as f:
            source = f.read()
        for match in re.finditer(r"^\s*(?:from\s+(rayx\S*)\s+(c?import)|(c?import)\s+(rayx\S*))",
                                 source, re.M):
            module = match.group(1) or match.group(4)
            kind = match.group(2) or match.group(3)
            if kind == "cimport":
                assert module.startswith("rayx._core."), (path, module)
            else:
                assert module == "rayx.exceptions", (path, module)
