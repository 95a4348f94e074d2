"""Throughput of the shared-memory object store (rayx._core.store).

Two ways to run it, from the repository root once the extensions are built
(without `pip install -e .`, prefix the second with PYTHONPATH=.):

  python -m pytest benchmarks/bench_store.py
                                          pytest-benchmark: create+seal and
                                          get+release of small objects
  python benchmarks/bench_store.py        objects/s for small puts and gets, and
                                          GB/s for large copies into the arena
                                          (cold pages, prefaulted, reused) next
                                          to a plain numpy copy of the same size
                                          in the same run

Writing into never-touched tmpfs pages costs a page fault (and zeroing) per
4 KiB page, which is why the arena offers `populate=True` and `prefault()`;
the "cold" and "prefaulted" rows show the difference.
"""
import argparse
import itertools
import os
import time

import numpy as np
import pytest

from rayx._core.store import Arena

PATH_PREFIX = f"/dev/shm/rayx-bench-{os.getpid()}-"
_ids = itertools.count()


def fresh_id():
    return next(_ids).to_bytes(8, "little") + b"\x00" * 12


def make_arena(name, capacity, populate=False):
    path = PATH_PREFIX + name
    if os.path.exists(path):
        os.unlink(path)
    return Arena.create(path, capacity, populate=populate)


def destroy(arena):
    arena.close()
    arena.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# pytest-benchmark


@pytest.fixture
def bench_arena():
    arena = make_arena("pytest", 256 << 20, populate=True)
    yield arena
    destroy(arena)


def test_create_seal_delete_small(benchmark, bench_arena):
    payload = b"x" * 100

    def put_and_delete():
        object_id = fresh_id()
        bench_arena.put(object_id, payload)
        bench_arena.delete(object_id)

    benchmark(put_and_delete)


def test_get_release_small(benchmark, bench_arena):
    object_id = fresh_id()
    bench_arena.put(object_id, b"x" * 100)

    def get_and_release():
        buffer = bench_arena.get(object_id)
        buffer.release()

    benchmark(get_and_release)


# ---------------------------------------------------------------------------
# Standalone


def rate(count, seconds):
    return f"{count / seconds:>12,.0f} /s   ({seconds / count * 1e6:.2f} us each)"


def bench_small(count):
    arena = make_arena("small", 1 << 30, populate=True)
    payload = b"x" * 100
    ids = [fresh_id() for _ in range(count)]
    more_ids = [fresh_id() for _ in range(count)]
    try:
        start = time.perf_counter()
        for object_id in ids:
            arena.put(object_id, payload)
        put_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for object_id in more_ids:
            view = arena.create_object(object_id, 100)
            view[:] = payload
            view.release()
            arena.seal(object_id)
        create_seal_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for object_id in ids:
            arena.get(object_id).release()
        get_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for object_id in ids:
            arena.delete(object_id)
        delete_seconds = time.perf_counter() - start
        arena.validate()
    finally:
        destroy(arena)
    print(f"small objects (100 B), {count:,} each:")
    print(f"  put (create+copy+seal)        {rate(count, put_seconds)}")
    print(f"  create_object+write+seal      {rate(count, create_seal_seconds)}")
    print(f"  get+release                   {rate(count, get_seconds)}")
    print(f"  delete                        {rate(count, delete_seconds)}")


def gbps(nbytes, seconds):
    return f"{nbytes / seconds / 1e9:6.2f} GB/s  ({seconds * 1e3:7.1f} ms)"


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_large(size):
    source = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    capacity = size + (size // 4) + (64 << 20)
    print(f"large copy of {size / 1e6:.0f} MB:")

    # numpy baselines: into a fresh (cold) buffer, then into a warm one.
    fresh = np.empty_like(source)
    cold_numpy = timed(lambda: np.copyto(fresh, source))
    warm_numpy = min(timed(lambda: np.copyto(fresh, source)) for _ in range(3))
    del fresh

    arena = make_arena("large", capacity)
    try:
        cold_put = timed(lambda: arena.put(b"c" * 20, source))
        arena.delete(b"c" * 20)
        reused = []
        for attempt in range(3):  # same (now faulted-in) pages again
            object_id = bytes([attempt]) * 20
            reused.append(timed(lambda: arena.put(object_id, source)))
            arena.delete(object_id)
        arena.validate()
    finally:
        destroy(arena)

    arena = make_arena("large", capacity)
    try:
        prefault_seconds = timed(lambda: arena.prefault())
        prefaulted_put = timed(lambda: arena.put(b"p" * 20, source))
        buffer = arena.get(b"p" * 20)
        assert np.array_equal(np.frombuffer(buffer, dtype=np.uint8)[-1000:], source[-1000:])
        del buffer
    finally:
        destroy(arena)

    populate_seconds = timed(lambda: destroy(make_arena("large", capacity, populate=True)))

    print(f"  numpy copy, cold destination  {gbps(size, cold_numpy)}")
    print(f"  numpy copy, warm destination  {gbps(size, warm_numpy)}")
    print(f"  arena put, cold pages         {gbps(size, cold_put)}")
    print(f"  arena put, prefaulted arena   {gbps(size, prefaulted_put)}")
    print(f"  arena put, reused pages       {gbps(size, min(reused))}")
    print(f"  prefault() of {capacity / 1e6:.0f} MB         {gbps(capacity, prefault_seconds)}")
    print(f"  create(populate=True)         {gbps(capacity, populate_seconds)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="small objects")
    parser.add_argument("--sizes", type=str, default="100,800", help="large copies, in MB")
    args = parser.parse_args()
    bench_small(args.count)
    for megabytes in args.sizes.split(","):
        bench_large(int(megabytes) * 1_000_000)


if __name__ == "__main__":
    main()
