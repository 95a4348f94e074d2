"""pytest-benchmark timings of the per-call hot paths of a task submission.

    pytest benchmarks/bench_hot_paths.py --benchmark-only

Complements bench_codec.py (TaskSpec.encode/decode of a prebuilt spec, small
message dumps/loads, framing, ids) and bench_store.py (arena put+delete and
get+release of raw bytes) without repeating them. Here:

* a TaskSpec *built* from the fields ``f.remote()`` fills in, then encoded, and
  decoded with its fields read back (the raylet's and the worker's view);
* ``rayx.runtime.serialization.serialize``/``deserialize`` of a small call's arguments,
  both as one tuple and per argument (as ``build_args`` does);
* a small *serialized object* written into the arena the way the core worker
  stores a value (create_object, SerializedObject.write_into, seal), then
  get + deserialize + release, on a small /dev/shm arena that is always unlinked;
* ``collections.deque`` append/popleft and ``queue.SimpleQueue`` put/get, as the
  floor any in-process queue of tasks is measured against.
"""
import collections
import itertools
import os
import queue

import pytest

from rayx.runtime import serialization
from rayx._core import codec
from rayx._core.store import Arena

SMALL_ARGS = (1, "hello", b"\x00" * 16, 2.5, None)


def build_spec(args):
    return codec.TaskSpec(
        task_type=codec.NORMAL_TASK, task_id=b"\x01" * 16, job_id=b"\x00\x00\x00\x01",
        parent_task_id=b"\x02" * 16, caller_id=b"\x03" * 16, function_id=b"\x04" * 20,
        function_name="__main__.small_value", args=args, nested_refs=[], num_returns=1,
        resources={"CPU": 1.0}, max_retries=3, retry_exceptions=False)


def encoded_args():
    return [(codec.ARG_VALUE, "", serialization.serialize(a).to_bytes()) for a in SMALL_ARGS]


# --------------------------------------------------------------------- task spec

def test_spec_build_and_encode(benchmark):
    args = encoded_args()
    benchmark(lambda: build_spec(args).encode())


def test_spec_decode_and_read(benchmark):
    data = build_spec(encoded_args()).encode()

    def decode():
        spec = codec.TaskSpec.decode(data)
        return spec.task_id, spec.function_id, spec.args, spec.resources
    benchmark(decode)


# --------------------------------------------------------------- serialization

def test_serialize_small_call_tuple(benchmark):
    benchmark(lambda: serialization.serialize(SMALL_ARGS).to_bytes())


def test_deserialize_small_call_tuple(benchmark):
    data = serialization.serialize(SMALL_ARGS).to_bytes()
    assert benchmark(serialization.deserialize, data) == SMALL_ARGS


def test_serialize_small_call_per_arg(benchmark):
    benchmark(lambda: [serialization.serialize(a).to_bytes() for a in SMALL_ARGS])


def test_serialize_result_ok(benchmark):
    """What a task returning b"ok" (the microbenchmark's small_value) pays to store its result."""
    benchmark(lambda: serialization.serialize(b"ok").to_bytes())


# ------------------------------------------------------------------------ arena

@pytest.fixture
def arena():
    path = f"/dev/shm/rayx-bench-hot-{os.getpid()}"
    if os.path.exists(path):
        os.unlink(path)
    arena = Arena.create(path, 64 << 20, populate=True)
    try:
        yield arena
    finally:
        arena.close()
        arena.unlink(missing_ok=True)


def test_arena_store_serialized_object(benchmark, arena):
    sobj = serialization.serialize(SMALL_ARGS)
    ids = (i.to_bytes(8, "little") + b"\x00" * 12 for i in itertools.count())

    def store_and_delete():
        object_id = next(ids)
        view = arena.create_object(object_id, sobj.size)
        sobj.write_into(view)
        del view
        arena.seal(object_id)
        arena.delete(object_id)
    benchmark(store_and_delete)


def test_arena_get_deserialize_release(benchmark, arena):
    sobj = serialization.serialize(SMALL_ARGS)
    object_id = b"\x09" * 20
    arena.put(object_id, sobj.to_bytes())

    def get_value():
        buffer = arena.get(object_id)
        value = serialization.deserialize(buffer)
        buffer.release()
        return value
    assert benchmark(get_value) == SMALL_ARGS


# ---------------------------------------------------------------- queue floor

def test_deque_push_pop(benchmark):
    q = collections.deque()
    item = ("task", 1)

    def push_pop():
        q.append(item)
        return q.popleft()
    benchmark(push_pop)


def test_simplequeue_put_get(benchmark):
    q = queue.SimpleQueue()
    item = ("task", 1)

    def put_get():
        q.put(item)
        return q.get()
    benchmark(put_get)
