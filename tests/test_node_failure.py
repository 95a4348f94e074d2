"""Node death on a multi-node cluster on one machine: the monitor marks a
SIGKILLed node dead, its tasks run again elsewhere, objects that existed only
there are rebuilt from lineage (even when the process that made them is gone),
puts made there fail with OwnerDiedError, its actors restart elsewhere, and no
get hangs. Every test starts its own cluster and kills only the raylet it
started (its workers die with it)."""
import os
import time

import numpy as np
import pytest

import rayx
from rayx.cluster_utils import Cluster
from rayx.exceptions import (ActorDiedError, ObjectLostError, ObjectReconstructionFailedError,
                             ObjectReconstructionFailedMaxAttemptsExceededError, OwnerDiedError)
from rayx.gcs import tables
from rayx.runtime import context
from rayx.scripts.cli import format_status
from rayx.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = pytest.mark.timeout(300)

BIG = 200_000          # int64s: 1.6 MB, so results live in the arena where they were made


def on(node, soft=True):
    return NodeAffinitySchedulingStrategy(node.node_id.hex(), soft=soft)


@pytest.fixture
def cluster():
    c = Cluster()
    c.add_node(num_cpus=1, node_timeout_s=3)
    c.add_node(num_cpus=2, object_store_memory=200 << 20)
    c.add_node(num_cpus=1, object_store_memory=200 << 20)
    c.connect()
    yield c
    c.shutdown()


def wait_dead(node, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = {n["NodeID"]: n["Alive"] for n in rayx.nodes()}
        if state.get(node.node_id.hex()) is False:
            return
        time.sleep(0.05)
    raise AssertionError(f"node {node.node_id.hex()} not marked dead within {timeout} s")


@rayx.remote
def make(i, delay=0.0):
    time.sleep(delay)
    return np.full(BIG, i, dtype=np.int64)


@rayx.remote
def plus_one(arr):
    return arr + 1


@rayx.remote
def first(arr):
    return int(arr[0])


@rayx.remote
def node_of(_=None):
    return rayx.get_runtime_context().get_node_id()


def test_sigkilled_node_is_marked_dead_and_its_tasks_recover(cluster):
    victim = cluster.worker_nodes[0]
    refs = [make.options(scheduling_strategy=on(victim)).remote(i, 0.0 if i < 20 else 0.3)
            for i in range(60)]
    rayx.wait(refs[:20], num_returns=20, timeout=60)       # the first 20 finished there
    cpus = rayx.cluster_resources()["CPU"]
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    assert rayx.cluster_resources()["CPU"] == cpus - 2
    dead = [n for n in rayx.nodes() if n["NodeID"] == victim.node_id.hex()]
    assert dead and dead[0]["Alive"] is False
    status = format_status(list(tables.NODES.scan(context.gcs()).values()))
    line = next(line for line in status.splitlines() if victim.node_id.hex() in line)
    assert "DEAD (" in line and ("stopped answering" in line or "no heartbeat" in line)
    values = rayx.get(refs, timeout=120)
    assert [int(v[0]) for v in values] == list(range(60))


def test_lost_objects_are_rebuilt_through_chains_and_on_other_nodes(cluster):
    victim, third = cluster.worker_nodes
    base = make.options(scheduling_strategy=on(victim)).remote(5)
    chain = plus_one.options(scheduling_strategy=on(victim)).remote(base)
    chain = plus_one.options(scheduling_strategy=on(victim)).remote(chain)
    assert rayx.get(first.remote(chain), timeout=60) == 7      # made (and kept) only on the victim
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    # A task on a third node needs it: rebuilt, with its whole chain.
    assert rayx.get(first.options(scheduling_strategy=on(third, soft=False)).remote(chain), timeout=120) == 7
    assert int(rayx.get(chain, timeout=120)[0]) == 7
    assert int(rayx.get(base, timeout=120)[0]) == 5


def test_put_on_a_dead_node_raises_owner_died_naming_it(cluster):
    victim = cluster.worker_nodes[0]

    @rayx.remote
    def put_there():
        return [rayx.put(np.ones(BIG))]

    [inner] = rayx.get(put_there.options(scheduling_strategy=on(victim, soft=False)).remote(), timeout=60)
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    with pytest.raises(OwnerDiedError) as info:
        rayx.get(inner, timeout=60)
    assert isinstance(info.value, ObjectLostError)
    message = str(info.value)
    assert inner.hex() in message and victim.node_id.hex()[:12] in message and "127.0.0.2" in message


@rayx.remote
def small(i):
    return [i]


@pytest.mark.parametrize("size", ["big", "small"])
def test_reconstruction_after_the_submitter_died(cluster, size):
    """A detached actor on a third node holds a ref to an object made on the
    victim by a task whose submitter (a worker of the victim) died with it. A
    small result lived only in the submitter's memory (it ran on a leased
    worker) until its ref escaped to the actor."""
    victim, third = cluster.worker_nodes

    @rayx.remote
    class Keeper:
        def keep(self, refs):
            self.ref = refs[0]
            return True

        def read(self):
            return int(rayx.get(self.ref, timeout=120)[0])

    keeper = Keeper.options(scheduling_strategy=on(third, soft=False), lifetime="detached",
                            name="keeper").remote()

    @rayx.remote
    def submit_from_victim(keeper):
        ref = make.remote(9) if size == "big" else small.remote(9)   # submitted on the victim
        rayx.wait([ref], timeout=60)
        return rayx.get(keeper.keep.remote([ref]))

    assert rayx.get(submit_from_victim.options(scheduling_strategy=on(victim, soft=False)).remote(keeper),
                    timeout=60)
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    assert rayx.get(keeper.read.remote(), timeout=120) == 9
    rayx.kill(keeper)


def test_actor_on_a_dead_node_restarts_elsewhere_or_dies_naming_the_node(cluster):
    victim = cluster.worker_nodes[0]

    @rayx.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

        def where(self):
            return rayx.get_runtime_context().get_node_id()

    strategy = on(victim)
    restarting = Counter.options(max_restarts=1, max_task_retries=1, scheduling_strategy=strategy).remote()
    mortal = Counter.options(max_restarts=0, scheduling_strategy=strategy).remote()
    assert rayx.get(restarting.where.remote(), timeout=60) == victim.node_id.hex()
    assert rayx.get(mortal.inc.remote(), timeout=60) == 1
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    assert rayx.get(restarting.where.remote(), timeout=120) != victim.node_id.hex()
    assert rayx.get(restarting.inc.remote(), timeout=60) == 1          # a new incarnation
    with pytest.raises(ActorDiedError) as info:
        rayx.get(mortal.inc.remote(), timeout=60)
    assert victim.node_id.hex()[:12] in str(info.value)


def test_a_node_back_at_the_same_address_is_a_new_node(cluster):
    victim = cluster.worker_nodes[0]
    address = victim.node_ip_address
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    again = cluster.add_node(num_cpus=2, node_ip_address=address)
    assert again.node_id != victim.node_id
    states = {n["NodeID"]: n["Alive"] for n in rayx.nodes()}
    assert states[victim.node_id.hex()] is False and states[again.node_id.hex()] is True
    assert rayx.get(node_of.options(scheduling_strategy=on(again, soft=False)).remote(), timeout=60) \
        == again.node_id.hex()


@rayx.remote
def logged(path, i):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return np.full(BIG, i, dtype=np.int64)


def test_many_getters_on_two_nodes_cause_one_re_execution(cluster, tmp_path):
    victim, third = cluster.worker_nodes
    runs = str(tmp_path / "runs")
    lost = logged.options(scheduling_strategy=on(victim)).remote(runs, 4)
    rayx.wait([lost], fetch_local=False, timeout=60)          # made there; no copy here
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    getters = [first.options(scheduling_strategy=on(node, soft=False)).remote(lost)
               for node in (third, cluster.head_node) for _ in range(3)]
    assert rayx.get(getters, timeout=120) == [4] * 6
    assert int(rayx.get(lost, timeout=60)[0]) == 4
    with open(runs) as f:
        assert len(f.read().split()) == 2                      # the first run, and one more


def test_lost_objects_that_cannot_be_rebuilt_say_why(cluster):
    victim = cluster.worker_nodes[0]

    @rayx.remote(max_restarts=0)
    class Maker:
        def make(self):
            return np.ones(BIG)

    maker = Maker.options(scheduling_strategy=on(victim, soft=False)).remote()
    by_call = maker.make.remote()
    no_retries = make.options(scheduling_strategy=on(victim), max_retries=0).remote(1)
    rayx.wait([by_call, no_retries], num_returns=2, fetch_local=False, timeout=60)
    cluster.remove_node(victim, allow_graceful=False, wait=False)
    wait_dead(victim)
    with pytest.raises(ObjectReconstructionFailedMaxAttemptsExceededError) as info:
        rayx.get(no_retries, timeout=60)
    assert no_retries.hex() in str(info.value) and "make" in str(info.value) \
        and victim.node_id.hex()[:12] in str(info.value)
    with pytest.raises(ObjectReconstructionFailedError) as info:
        rayx.get(by_call, timeout=60)
    assert by_call.hex() in str(info.value) and "actor" in str(info.value)


@rayx.remote(max_retries=10, scheduling_strategy="SPREAD")
def chain_start(seed):
    time.sleep(0.01)
    return np.full(25_000, seed, dtype=np.int64)        # 200 KB: in the arena where it was made


@rayx.remote(max_retries=10, scheduling_strategy="SPREAD")
def chain_step(previous):
    time.sleep(0.01)
    return previous + 1


def test_chains_spread_over_the_nodes_survive_a_node_killed_mid_workload(cluster):
    """Chaos, bounded: chains of short tasks spread over the three nodes, each step
    taking the previous step's result, while a node is SIGKILLed; every chain ends
    with the right value, its lost links rebuilt or re-run."""
    victim = cluster.worker_nodes[0]
    length, pending, done, steps = 12, {}, 0, 0
    for chain in range(12):
        pending[chain_start.remote(chain * 1000)] = (chain, 0)
    started, killed = time.time(), False
    while pending and time.time() - started < 120:
        if not killed and steps >= 40:            # about a quarter of the 144 steps done
            cluster.remove_node(victim, allow_graceful=False, wait=False)
            killed = True
        ready, _ = rayx.wait(list(pending), num_returns=1, timeout=0.05, fetch_local=False)
        for ref in ready:
            steps += 1
            chain, step = pending.pop(ref)
            if step + 1 < length:
                pending[chain_step.remote(ref)] = (chain, step + 1)
            else:
                assert int(rayx.get(ref, timeout=60)[0]) == chain * 1000 + length - 1
                done += 1
    assert killed and not pending and done == 12
