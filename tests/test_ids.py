"""rayx._core.ids: sizes, round trips, hashing, determinism of derived ids."""
import copy
import hashlib
import pickle

import pytest

from rayx._core.ids import ActorID, FunctionID, JobID, NodeID, ObjectID, TaskID, WorkerID

ALL = [(JobID, 4), (TaskID, 16), (ActorID, 16), (ObjectID, 20), (NodeID, 16),
       (WorkerID, 16), (FunctionID, 20)]


@pytest.mark.parametrize("cls,size", ALL)
def test_sizes_and_round_trips(cls, size):
    assert cls.SIZE == size
    a = cls.from_random()
    assert len(a.binary()) == size
    assert cls(a.binary()) == a
    assert cls.from_hex(a.hex()) == a
    assert a.hex() == a.binary().hex()
    assert bytes(a) == a.binary()
    assert repr(a) == f"{cls.__name__}({a.hex()})"
    assert cls(bytearray(a.binary())) == a
    assert cls(memoryview(a.binary())) == a


@pytest.mark.parametrize("cls,size", ALL)
def test_wrong_size_raises(cls, size):
    for n in (0, size - 1, size + 1):
        with pytest.raises(ValueError, match=f"{cls.__name__}.*{size}"):
            cls(b"\x01" * n)
    with pytest.raises(ValueError):
        cls.from_hex("zz")
    with pytest.raises(ValueError):
        cls.from_hex("ab" * (size + 1))
    with pytest.raises(TypeError):
        cls("x" * size)


@pytest.mark.parametrize("cls,size", ALL)
def test_nil(cls, size):
    n = cls.nil()
    assert n.is_nil()
    assert n.binary() == b"\xff" * size
    assert not cls(b"\x00" * size).is_nil()
    assert not cls.from_random().is_nil()


@pytest.mark.parametrize("cls,size", ALL)
def test_pickle_and_copy(cls, size):
    a = cls.from_random()
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        b = pickle.loads(pickle.dumps(a, protocol=proto))
        assert type(b) is cls and b == a
    assert copy.copy(a) == a and copy.deepcopy(a) == a


def test_hash_and_equality():
    ids = [ObjectID.from_random() for _ in range(1000)]
    same = [ObjectID(i.binary()) for i in ids]
    assert set(ids) == set(same)
    d = {i: n for n, i in enumerate(ids)}
    assert all(d[s] == n for n, s in enumerate(same))
    assert hash(ids[0]) == hash(ids[0].binary())
    assert ids[0] != ids[1]
    assert ids[0] == same[0]
    assert not (ids[0] != same[0])
    # Different classes with the same bytes are different ids.
    raw = b"\x07" * 16
    assert TaskID(raw) != ActorID(raw)
    assert NodeID(raw) != WorkerID(raw)
    assert ids[0] != ids[0].binary()


def test_job_id_int():
    j = JobID.from_int(7)
    assert j.binary() == b"\x07\x00\x00\x00"
    assert j.to_int() == 7
    assert JobID.from_int(0xFFFFFFFF).to_int() == 0xFFFFFFFF
    with pytest.raises(ValueError):
        JobID.from_int(-1)
    with pytest.raises(ValueError):
        JobID.from_int(1 << 32)


def test_task_ids_are_deterministic():
    job = JobID.from_int(3)
    driver = TaskID.for_driver(job)
    assert driver == TaskID.for_driver(JobID.from_int(3))
    assert driver != TaskID.for_driver(JobID.from_int(4))
    assert driver.job_id() == job

    children = [TaskID.for_child(driver, i) for i in range(10000)]
    assert children == [TaskID.for_child(driver, i) for i in range(10000)]
    assert len(set(children)) == 10000
    assert all(c.job_id() == job for c in children)
    # Different parents give different children.
    other = TaskID.for_child(children[1], 0)
    assert other not in set(children)
    assert TaskID.for_child(driver, 2**64 - 1) == TaskID.for_child(driver, 2**64 - 1)
    with pytest.raises(ValueError):
        TaskID.for_child(driver, -1)
    with pytest.raises(TypeError):
        TaskID.for_child(driver.binary(), 0)


def test_actor_ids():
    job = JobID.from_int(1)
    parent = TaskID.for_driver(job)
    a = ActorID.of(job, parent, 0)
    assert a == ActorID.of(job, parent, 0)
    assert a != ActorID.of(job, parent, 1)
    assert a.job_id() == job
    # Actor 0 of a task is not child task 0 of the task.
    assert a.binary() != TaskID.for_child(parent, 0).binary()

    creation = TaskID.for_actor_creation(a)
    assert creation == TaskID.for_actor_creation(a)
    assert creation.job_id() == job

    caller = TaskID.for_child(parent, 5)
    calls = [TaskID.for_actor_task(a, caller, s) for s in range(100)]
    assert calls == [TaskID.for_actor_task(a, caller.binary(), s) for s in range(100)]
    assert len(set(calls)) == 100
    assert creation not in calls
    worker = WorkerID.from_random()
    assert TaskID.for_actor_task(a, worker, 0) == TaskID.for_actor_task(a, worker.binary(), 0)
    assert TaskID.for_actor_task(a, worker, 0) != calls[0]
    assert all(c.job_id() == job for c in calls)


def test_object_ids():
    t = TaskID.from_random()
    r = ObjectID.for_return(t, 1)
    assert r == ObjectID.for_return(t, 1)
    assert r.binary() == t.binary() + b"\x01\x00\x00\x00"
    assert r.task_id() == t and r.index() == 1 and not r.is_put()
    p = ObjectID.for_put(t, 1)
    assert p.binary() == t.binary() + b"\x01\x00\x00\x80"
    assert p.task_id() == t and p.index() == 1 and p.is_put()
    assert p != r
    big = ObjectID.for_return(t, 2**31 - 1)
    assert big.index() == 2**31 - 1 and not big.is_put()
    assert ObjectID.for_put(t, 2**31 - 1).index() == 2**31 - 1
    for bad in (0, -1, 2**31):
        with pytest.raises(ValueError):
            ObjectID.for_return(t, bad)
        with pytest.raises(ValueError):
            ObjectID.for_put(t, bad)
    ids = {ObjectID.for_return(t, i) for i in range(1, 100)} | {ObjectID.for_put(t, i) for i in range(1, 100)}
    assert len(ids) == 198


def test_function_id():
    f = FunctionID.from_bytes_hash(b"some pickled function")
    assert f.binary() == hashlib.sha1(b"some pickled function").digest()
    assert f == FunctionID.from_bytes_hash(b"some pickled function")
    assert f != FunctionID.from_bytes_hash(b"another")


def test_random_ids_differ():
    assert len({NodeID.from_random() for _ in range(1000)}) == 1000
