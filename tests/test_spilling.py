"""A full arena: referenced objects spill to disk and come back on demand;
an object larger than the whole arena is a clear ObjectStoreFullError; spill
files go with their objects, and with the node."""
import os

import pytest

import rayx
from rayx.runtime import context
from helpers import wait_for


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=1, object_store_memory=64 << 20)], indirect=True)
def test_full_arena_spills_and_restores(rayx_fresh):
    import numpy as np
    arrays = [np.full(20 << 20, i, dtype=np.uint8) for i in range(6)]   # 120 MB into 64 MB
    refs = [rayx.put(a) for a in arrays]
    for i, ref in enumerate(refs):
        out = rayx.get(ref, timeout=60)
        assert out[0] == i and out[-1] == i and out.nbytes == 20 << 20
        del out

    @rayx.remote
    def first_and_last(a):
        return int(a[0]), int(a[-1])

    assert rayx.get([first_and_last.remote(r) for r in refs], timeout=120) == [(i, i) for i in range(6)]
    status = context.core_worker().request("status")
    assert status["spilled_bytes"] > 0


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=1, object_store_memory=32 << 20)], indirect=True)
def test_object_larger_than_the_arena(rayx_fresh):
    import numpy as np
    from rayx.exceptions import ObjectStoreFullError
    with pytest.raises(ObjectStoreFullError):
        rayx.put(np.zeros(64 << 20, dtype=np.uint8))
    assert rayx.get(rayx.put(1)) == 1


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=1, object_store_memory=64 << 20)], indirect=True)
def test_spill_files_go_with_their_objects_and_the_node(rayx_fresh):
    import numpy as np
    session_dir = context.core_worker().node_info["session_dir"]
    spill_root = os.path.join(session_dir, "spill")

    def spill_files():
        return [name for _, _, names in os.walk(spill_root) for name in names]

    def arena_objects():
        return context.core_worker().request("status")["arena"]["num_objects"]

    # Dropped puts never need spilling, however many: the arena frees them.
    for i in range(100):
        rayx.put(np.full(4 << 20, i, dtype=np.uint8))
    assert wait_for(lambda: arena_objects() == 0, timeout=60)
    assert not spill_files()
    # Held ones spill; their files go when they are freed.
    held = [rayx.put(np.full(16 << 20, i, dtype=np.uint8)) for i in range(6)]   # 96 MB into 64
    assert spill_files()
    assert [rayx.get(ref, timeout=60)[0] for ref in held] == list(range(6))
    del held
    assert wait_for(lambda: not spill_files(), timeout=60), spill_files()
    # And what is still spilled when the node stops goes with its directory.
    held = [rayx.put(np.full(16 << 20, i, dtype=np.uint8)) for i in range(6)]
    assert spill_files()
    rayx.shutdown()
    assert not os.path.exists(spill_root) or not os.listdir(spill_root)
    del held
