"""Microbenchmarks of the node-socket codec and the ids.

Under pytest-benchmark::

    pytest benchmarks/bench_codec.py --benchmark-only

Standalone (prints ops/s of the codec and the ids)::

    python benchmarks/bench_codec.py
"""
import os
import sys
import timeit

if __name__ == "__main__" and not __package__:
    # Run as a script from a source checkout: import the in-place build.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rayx._core import codec
from rayx._core.ids import ObjectID, TaskID

N_FRAMES = 10000


def typical_spec():
    """A normal task with two small inline args, one CPU, as a driver submits it."""
    return codec.TaskSpec(
        task_id=bytes(range(16)), job_id=b"\x01\x00\x00\x00", parent_task_id=b"\x02" * 16,
        caller_id=b"\x03" * 16, function_id=b"\x04" * 20, function_name="mymodule.compute",
        args=[(0, "", b"\x80\x05K\x01."), (0, "", b"\x80\x05\x95\x09\x00\x00\x00\x8c\x05hello\x94.")],
        resources={"CPU": 1.0})


def small_message():
    return ("done", b"\x05" * 20, 3, True)


def frames_blob():
    return codec.pack_frames([("submit", i, b"\x06" * 20) for i in range(N_FRAMES)])


# ---------------------------------------------------------------------------
# pytest-benchmark

try:
    import pytest
except ImportError:          # standalone mode only
    pytest = None

if pytest is not None:
    def test_spec_encode(benchmark):
        spec = typical_spec()
        benchmark(spec.encode)

    def test_spec_decode(benchmark):
        data = typical_spec().encode()
        benchmark(codec.TaskSpec.decode, data)

    def test_dumps_small(benchmark):
        benchmark(codec.dumps, small_message())

    def test_loads_small(benchmark):
        benchmark(codec.loads, codec.dumps(small_message()))

    def test_frame_reader_10000_coalesced(benchmark):
        blob = frames_blob()

        def run():
            return codec.FrameReader().feed(blob)

        assert len(benchmark(run)) == N_FRAMES

    def test_pack_frames_10000(benchmark):
        msgs = [("submit", i, b"\x06" * 20) for i in range(N_FRAMES)]
        benchmark(codec.pack_frames, msgs)

    def test_object_id_from_bytes(benchmark):
        b = b"\x07" * 20
        benchmark(ObjectID, b)

    def test_task_id_for_child(benchmark):
        t = TaskID.from_random()
        benchmark(TaskID.for_child, t, 12345)


# ---------------------------------------------------------------------------
# Standalone

def _rate(fn, min_time=0.3):
    n = 1
    while True:
        t = timeit.timeit(fn, number=n)
        if t >= min_time:
            break
        n *= 4 if t < min_time / 10 else 2
    best = min(timeit.repeat(fn, number=n, repeat=3))
    return n / best


def main():
    spec = typical_spec()
    data = spec.encode()
    msg = small_message()
    mdata = codec.dumps(msg)
    blob = frames_blob()
    rows = [
        ("codec", f"TaskSpec.encode ({len(data)} B)", _rate(spec.encode), 1),
        ("codec", "TaskSpec.decode", _rate(lambda: codec.TaskSpec.decode(data)), 1),
        ("codec", f"dumps small tuple ({len(mdata)} B)", _rate(lambda: codec.dumps(msg)), 1),
        ("codec", "loads small tuple", _rate(lambda: codec.loads(mdata)), 1),
        ("codec", f"FrameReader.feed {N_FRAMES} frames", _rate(lambda: codec.FrameReader().feed(blob)),
         N_FRAMES),
    ]
    b20 = b"\x07" * 20
    oid = ObjectID(b20)
    tid = TaskID.from_random()
    rows += [
        ("ids", "ObjectID(bytes)", _rate(lambda: ObjectID(b20)), 1),
        ("ids", "hash(ObjectID)", _rate(lambda: hash(oid)), 1),
        ("ids", "TaskID.for_child", _rate(lambda: TaskID.for_child(tid, 7)), 1),
    ]
    print(f"{'part':8s} {'operation':40s} {'ops/s':>14s} {'us/op':>9s}")
    for impl, op, rate, per in rows:
        items = rate * per
        suffix = f"   ({items:,.0f} msgs/s)" if per > 1 else ""
        print(f"{impl:8s} {op:40s} {rate:14,.0f} {1e6 / items:9.3f}{suffix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
