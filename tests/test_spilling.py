"""A full arena: referenced objects spill to disk and come back on demand;
an object larger than the whole arena is a clear ObjectStoreFullError."""
import pytest

import rayx


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
    status = rayx.api._worker.request("status")
    assert status["spilled_bytes"] > 0


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=1, object_store_memory=32 << 20)], indirect=True)
def test_object_larger_than_the_arena(rayx_fresh):
    import numpy as np
    from rayx.exceptions import ObjectStoreFullError
    with pytest.raises(ObjectStoreFullError):
        rayx.put(np.zeros(64 << 20, dtype=np.uint8))
    assert rayx.get(rayx.put(1)) == 1
