"""Tests of the shared-memory object store (rayx._core.store) through its
Python API: real /dev/shm files, real processes (fork and fresh interpreters),
real SIGKILLs. Every test ends with validate() and the leak counters
(allocations vs frees, pins vs releases) checked, and no arena file left
behind. No timing assertions: a wedged lock shows up as a subprocess timeout.
"""
import gc
import glob
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rayx._core.store import Arena, ObjectBuffer
from rayx.exceptions import ArenaError, ObjectExistsError, ObjectNotFoundError, ObjectStoreFullError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH_PREFIX = f"/dev/shm/rayx-pytest-{os.getpid()}-"
CHILD_TIMEOUT = 120


def oid(number):
    return number.to_bytes(4, "little") + b"\x5a" * 16


def check_accounting(arena):
    arena.validate()
    stats = arena.stats()
    assert stats["allocated"] + stats["free"] == stats["heap_size"]
    assert stats["allocations"] - stats["frees"] == stats["allocated_blocks"] == stats["num_objects"]
    assert stats["pins"] >= stats["releases"]
    if stats["num_pinned"] == 0:
        assert stats["pins"] == stats["releases"]


@pytest.fixture
def arena_path(request):
    path = PATH_PREFIX + request.node.name.replace("[", "-").replace("]", "")
    if os.path.exists(path):
        os.unlink(path)
    yield path
    if os.path.exists(path):
        os.unlink(path)


@pytest.fixture
def arena(arena_path):
    store = Arena.create(arena_path, 32 << 20)
    yield store
    gc.collect()
    if not store.closed:
        check_accounting(store)
        assert store.stats()["num_pinned"] == 0, "a test leaked a pin"
        store.close()
    store.unlink(missing_ok=True)


@pytest.fixture(autouse=True, scope="module")
def no_arena_file_left_behind():
    yield
    assert glob.glob(PATH_PREFIX + "*") == []


def fork_child(body):
    """Runs body() in a forked child that exits 0 if it returns, 1 if it raises."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_child(pid):
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_python(code, timeout=CHILD_TIMEOUT):
    """Runs `code` in a fresh interpreter (not a fork) and returns its stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ---------------------------------------------------------------------------
# One process.

def test_create_seal_get_release_delete(arena):
    view = arena.create_object(oid(1), 11)
    assert not view.readonly and len(view) == 11
    view[:] = b"hello world"
    del view
    assert not arena.contains(oid(1))
    assert arena.get(oid(1)) is None  # unsealed
    arena.seal(oid(1))
    assert oid(1) in arena
    buffer = arena.get(oid(1))
    assert isinstance(buffer, ObjectBuffer)
    assert buffer.object_id == oid(1) and buffer.size == len(buffer) == 11
    assert bytes(memoryview(buffer)) == b"hello world"
    assert arena.stats()["num_pinned"] == 1
    del buffer
    assert arena.stats()["num_pinned"] == 0
    assert arena.delete(oid(1)) is True
    assert arena.delete(oid(1)) is False
    assert arena.get(oid(1)) is None
    check_accounting(arena)


def test_errors_map_to_rayx_exceptions(arena):
    arena.put(oid(1), b"abc")
    with pytest.raises(ObjectExistsError):
        arena.put(oid(1), b"abc")
    with pytest.raises(ObjectExistsError):
        arena.create_object(oid(1), 10)
    with pytest.raises(ObjectNotFoundError):
        arena.seal(oid(2))
    with pytest.raises(ObjectNotFoundError):
        arena.abort(oid(2))
    with pytest.raises(ArenaError, match="already sealed"):
        arena.seal(oid(1))
    with pytest.raises(ArenaError, match="already sealed"):
        arena.abort(oid(1))
    arena.create_object(oid(3), 10)
    with pytest.raises(ArenaError, match="not sealed"):
        arena.delete(oid(3))
    arena.abort(oid(3))
    with pytest.raises(ValueError):
        arena.get(b"short")
    with pytest.raises(TypeError):
        arena.get("x" * 20)
    with pytest.raises(ValueError):
        arena.create_object(oid(4), -1)
    with pytest.raises((BufferError, ValueError)):  # numpy says ValueError
        arena.put(oid(5), np.zeros((4, 4))[:, ::2])  # not contiguous
    assert not arena.contains(oid(5))
    check_accounting(arena)


def test_arena_full_raises_object_store_full(arena):
    free = arena.stats()["largest_free_block"]
    with pytest.raises(ObjectStoreFullError) as raised:
        arena.create_object(oid(1), free + 1)
    message = str(raised.value)
    assert str(free + 1) in message and "free" in message
    big = arena.create_object(oid(1), free)
    del big
    with pytest.raises(ObjectStoreFullError):
        arena.put(oid(2), b"x")
    arena.abort(oid(1))
    arena.put(oid(2), b"x")
    check_accounting(arena)


def test_object_table_full_raises_object_store_full(arena_path):
    with Arena.create(arena_path, 4 << 20, object_entries=8) as small:
        for number in range(8):
            small.put(oid(number), b"x")
        with pytest.raises(ObjectStoreFullError, match="table"):
            small.put(oid(100), b"x")
        check_accounting(small)
    os.unlink(arena_path)


def test_zero_copy_and_read_only(arena):
    data = np.arange(100000, dtype=np.float64)
    arena.put(oid(1), data)
    buffer = arena.get(oid(1))
    array = np.frombuffer(buffer, dtype=np.float64)
    pointer = array.__array_interface__["data"][0]
    assert arena.base_address <= pointer < arena.base_address + arena.capacity
    assert pointer == buffer.address and pointer % 64 == 0
    assert np.array_equal(array, data)
    assert not array.flags.writeable
    with pytest.raises(ValueError):
        array[0] = 1.0
    with pytest.raises(ValueError):
        array.setflags(write=True)
    view = memoryview(buffer)
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1
    # The pin lives as long as anything built on the buffer.
    del buffer, view
    assert arena.stats()["num_pinned"] == 1
    assert arena.delete(oid(1)) is True  # deferred
    assert arena.stats()["num_objects"] == 1
    assert float(array[-1]) == 99999.0
    del array
    stats = arena.stats()
    assert stats["num_objects"] == 0 and stats["num_pinned"] == 0


def test_pinned_object_is_never_evicted_nor_freed(arena):
    for number in range(1, 5):
        arena.put(oid(number), bytes(1000))
    assert arena.lru_candidates(1 << 40) == [oid(1), oid(2), oid(3), oid(4)]
    assert arena.lru_candidates(1500) == [oid(1), oid(2)]
    assert arena.lru_candidates(0) == []
    pinned = arena.get(oid(2))
    assert oid(2) not in arena.lru_candidates(1 << 40)
    assert arena.delete(oid(2)) is True
    assert not arena.contains(oid(2)) and arena.get(oid(2)) is None
    with pytest.raises(ObjectExistsError):  # still occupying its id until freed
        arena.put(oid(2), b"new")
    assert bytes(memoryview(pinned)[:4]) == bytes(4)
    assert arena.stats()["num_objects"] == 4
    del pinned
    assert arena.stats()["num_objects"] == 3
    again = arena.get(oid(3))
    del again  # used: now the most recently used
    assert arena.lru_candidates(1 << 40) == [oid(1), oid(4), oid(3)]
    check_accounting(arena)


def test_explicit_release_refused_while_views_alive(arena):
    arena.put(oid(1), b"abcdef")
    buffer = arena.get(oid(1))
    view = memoryview(buffer)
    with pytest.raises(BufferError):
        buffer.release()
    view.release()
    buffer.release()
    assert arena.stats()["num_pinned"] == 0
    buffer.release()  # idempotent
    with pytest.raises(BufferError):
        memoryview(buffer)
    check_accounting(arena)


def test_close_waits_for_live_buffers(arena_path):
    owner = Arena.create(arena_path, 8 << 20)
    observer = Arena.attach(arena_path)
    owner.put(oid(1), b"still readable")
    array = np.frombuffer(owner.get(oid(1)), dtype=np.uint8)
    writable = owner.create_object(oid(2), 8)
    owner.close()
    assert owner.closed
    with pytest.raises(ArenaError, match="closed"):
        owner.get(oid(1))
    assert observer.stats()["num_processes"] == 2  # not detached yet
    assert bytes(array) == b"still readable"
    writable[:] = b"12345678"  # still mapped
    del array
    assert observer.stats()["num_processes"] == 2
    del writable
    gc.collect()
    stats = observer.stats()
    assert stats["num_processes"] == 1 and stats["num_pinned"] == 0
    assert observer.stats()["num_objects"] == 1  # the unsealed object was aborted at detach
    check_accounting(observer)
    owner.close()  # idempotent
    observer.close()
    observer.unlink()


def test_attach_and_create_errors(arena_path):
    with pytest.raises(ArenaError):
        Arena.attach(arena_path)
    with open(arena_path, "wb") as junk:
        junk.write(b"junk" * 10000)
    with pytest.raises(ArenaError, match="not a rayx arena"):
        Arena.attach(arena_path)
    with pytest.raises(ArenaError) as raised:
        Arena.create(arena_path, 1 << 20)
    assert raised.value.errno == 17  # EEXIST
    os.unlink(arena_path)
    with pytest.raises(ArenaError):
        Arena.create(arena_path, 4096)  # too small for the metadata
    assert not os.path.exists(arena_path)
    with pytest.raises(TypeError):
        Arena()


def test_prefault_and_populate(arena_path):
    with Arena.create(arena_path, 16 << 20, populate=True) as store:
        store.put(oid(1), b"keep me")
        store.prefault()
        store.prefault(4096, 8192)
        store.prefault(0, 0)
        with pytest.raises(ArenaError):
            store.prefault(store.capacity + 1)
        buffer = store.get(oid(1))
        assert bytes(memoryview(buffer)) == b"keep me"
        del buffer
        check_accounting(store)
    os.unlink(arena_path)


# ---------------------------------------------------------------------------
# Several processes.

def _child_reads(path, object_id, expected, queue):
    store = Arena.attach(path)
    buffer = store.get(object_id)
    queue.put(bytes(memoryview(buffer)) == expected and store.contains(object_id))
    del buffer
    store.put(object_id[::-1], b"from the child")
    store.close()


def test_processes_share_objects(arena, arena_path):
    arena.put(oid(1), b"from the parent")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_reads, args=(arena_path, oid(1), b"from the parent", queue))
    child.start()
    assert queue.get(timeout=CHILD_TIMEOUT) is True
    child.join(CHILD_TIMEOUT)
    assert child.exitcode == 0
    buffer = arena.get(oid(1)[::-1])
    assert bytes(memoryview(buffer)) == b"from the child"
    del buffer
    assert arena.stats()["num_processes"] == 1


def test_fresh_interpreter_creates_and_parent_reads(arena, arena_path):
    arena.put(oid(7), np.arange(10, dtype=np.int32))
    out = run_python(f"""
        import numpy as np
        from rayx._core.store import Arena
        store = Arena.attach({arena_path!r})
        array = np.frombuffer(store.get({oid(7)!r}), dtype=np.int32)
        store.put({oid(8)!r}, (array * 2).tobytes())
        del array
        assert {oid(9)!r} not in store
        assert store.delete({oid(7)!r})
        store.validate()
        store.close()
        print("ok")
    """)
    assert out.strip() == "ok"
    assert not arena.contains(oid(7))
    doubled = np.frombuffer(arena.get(oid(8)), dtype=np.int32)
    assert doubled.tolist() == list(range(0, 20, 2))
    del doubled


def test_many_processes_at_once(arena, arena_path):
    for number in range(8):
        arena.put(oid(1000 + number), bytes([number]) * 4096)

    def hammer(seed):
        import random
        store = Arena.attach(arena_path)
        rng = random.Random(seed)
        mine = []
        for step in range(400):
            action = rng.random()
            if action < 0.5:
                object_id = oid(seed * 100000 + step)
                try:
                    store.put(object_id, os.urandom(rng.randint(1, 20000)))
                    mine.append(object_id)
                except ObjectStoreFullError:
                    pass
            elif action < 0.75 and mine:
                assert store.delete(mine.pop(rng.randrange(len(mine))))
            else:
                number = rng.randrange(8)
                buffer = store.get(oid(1000 + number))
                assert bytes(memoryview(buffer)) == bytes([number]) * 4096
                del buffer
        for object_id in mine:
            assert store.delete(object_id)
        store.validate()
        store.close()

    children = [fork_child(lambda seed=seed: hammer(seed)) for seed in range(1, 6)]
    assert [wait_child(pid) for pid in children] == [0] * 5
    stats = arena.stats()
    assert stats["num_objects"] == 8 and stats["num_processes"] == 1
    check_accounting(arena)


def test_release_pins_of_a_sigkilled_child(arena, arena_path):
    for number in range(1, 4):
        arena.put(oid(number), bytes(100))
    ready_read, ready_write = os.pipe()

    def pin_and_wait():
        store = Arena.attach(arena_path)
        held = [store.get(oid(1)), store.get(oid(1)), store.get(oid(2))]
        store.create_object(oid(9), 50)  # never sealed
        os.write(ready_write, b"r")
        signal.pause()
        del held

    pid = fork_child(pin_and_wait)
    assert os.read(ready_read, 1) == b"r"
    os.kill(pid, signal.SIGKILL)
    assert wait_child(pid) == -signal.SIGKILL
    os.close(ready_read)
    os.close(ready_write)
    stats = arena.stats()
    assert stats["num_pinned"] == 2 and stats["num_objects"] == 4
    assert oid(1) not in arena.lru_candidates(1 << 40)
    assert arena.delete(oid(1)) is True  # deferred: the dead child still pins it
    assert arena.stats()["num_objects"] == 4
    assert arena.release_pins_of(pid) == 3
    stats = arena.stats()
    assert stats["num_pinned"] == 0 and stats["num_objects"] == 2  # 1 freed, 9 aborted
    assert stats["num_processes"] == 1
    assert arena.lru_candidates(1 << 40) == [oid(2), oid(3)] or \
        arena.lru_candidates(1 << 40) == [oid(3), oid(2)]
    assert arena.release_pins_of(pid) == 0
    check_accounting(arena)


def test_forked_child_using_the_parents_arena_gets_its_own_slot(arena):
    arena.put(oid(1), b"shared")
    parent_buffer = arena.get(oid(1))
    ready_read, ready_write = os.pipe()

    def use_inherited():
        extra = arena.get(oid(1))  # same Arena object, new process
        assert bytes(memoryview(extra)) == b"shared"
        os.write(ready_write, b"r")
        signal.pause()

    pid = fork_child(use_inherited)
    assert os.read(ready_read, 1) == b"r"
    os.kill(pid, signal.SIGKILL)
    wait_child(pid)
    os.close(ready_read)
    os.close(ready_write)
    assert arena.stats()["num_processes"] == 2
    assert arena.release_pins_of(pid) == 1
    assert arena.stats()["num_pinned"] == 1  # the parent's own pin survives
    del parent_buffer
    check_accounting(arena)


def test_child_killed_holding_the_lock_does_not_wedge_the_others(arena, arena_path):
    arena.put(oid(1), b"before")
    ready_read, ready_write = os.pipe()

    def hold_the_lock():
        Arena.attach(arena_path)._lock_and_hang(ready_write)

    pid = fork_child(hold_the_lock)
    assert os.read(ready_read, 1) == b"L"  # the child holds the lock
    os.kill(pid, signal.SIGKILL)
    assert wait_child(pid) == -signal.SIGKILL
    os.close(ready_read)
    os.close(ready_write)
    # Another process goes first, under a timeout, so a wedged lock fails the
    # test instead of hanging it.
    out = run_python(f"""
        from rayx._core.store import Arena
        store = Arena.attach({arena_path!r})
        store.put({oid(2)!r}, b"after")
        store.validate()
        print(store.stats()["recoveries"])
        store.close()
    """)
    assert out.strip() == "1"
    assert bytes(memoryview(arena.get(oid(2)))) == b"after"
    assert arena.release_pins_of(pid) == 0
    assert arena.stats()["num_processes"] == 1
    check_accounting(arena)


def test_a_call_waiting_for_the_lock_lets_other_threads_run(arena, arena_path):
    """A get() blocked on the lock (held by a hung child) releases the GIL for the
    wait; a close() meanwhile waits for that call, whose buffer stays valid."""
    import threading
    import time
    arena.put(oid(1), b"payload")
    ready_read, ready_write = os.pipe()
    holder = fork_child(lambda: Arena.attach(arena_path)._lock_and_hang(ready_write))
    assert os.read(ready_read, 1) == b"L"  # the child holds the lock
    # Should the GIL stay held, this thread could not run: a watchdog frees the lock.
    watchdog = fork_child(lambda: (time.sleep(30), os.kill(holder, signal.SIGKILL)))
    got = []
    waiter = threading.Thread(target=lambda: got.append(arena.get(oid(1))))
    waiter.start()
    ran = 0
    while waiter.is_alive() and ran < 20:
        ran += 1
        time.sleep(0.01)
    assert ran == 20 and waiter.is_alive(), "the waiting get() held the GIL"
    arena.close()                       # deferred: the get() is still running
    assert arena.closed
    os.kill(holder, signal.SIGKILL)
    waiter.join(CHILD_TIMEOUT)
    os.kill(watchdog, signal.SIGKILL)
    assert wait_child(holder) == -signal.SIGKILL and wait_child(watchdog) == -signal.SIGKILL
    os.close(ready_read)
    os.close(ready_write)
    (buffer,) = got
    assert bytes(memoryview(buffer)) == b"payload"
    assert arena.live_buffers == 1
    buffer.release()
    assert arena.live_buffers == 0


@pytest.mark.parametrize("operation", ["put", "delete", "get"])
def test_child_killed_at_any_step_of_an_operation(arena, arena_path, operation):
    for number in range(1, 6):
        arena.put(oid(number), bytes(3000))
    arena.delete(oid(2))
    arena.delete(oid(4))  # free neighbours of 3: deleting it coalesces

    def run(n):
        store = Arena.attach(arena_path)
        store._crash_after_writes(n)
        if operation == "put":
            store.put(oid(100), bytes(2000))
        elif operation == "delete":
            assert store.delete(oid(3))
        else:
            buffer = store.get(oid(5))
            store._crash_after_writes(0)
            os._exit(0)  # exit holding the pin
        store._crash_after_writes(0)
        store.close()

    survived = False
    for n in range(1, 200):
        before = arena.stats()
        pid = fork_child(lambda: run(n))
        code = wait_child(pid)
        arena.release_pins_of(pid)
        check_accounting(arena)
        if code == -signal.SIGKILL:
            after = arena.stats()
            for key in ("allocated", "free", "num_objects", "num_sealed", "num_pinned"):
                assert after[key] == before[key], (n, key)
            continue
        assert code == 0
        survived = True
        break
    assert survived and n > 5
    assert arena.stats()["recoveries"] >= n - 1
    assert arena.contains(oid(100)) == (operation == "put")
    assert arena.contains(oid(3)) == (operation != "delete")
