"""Borrowed refs across nodes: a ref passed (nested in an argument) to a task or
actor on another node and kept there keeps the object alive after the owner's
own ref is gone, and the object is freed once the borrower lets go too."""
import gc

import numpy as np
import pytest

import rayx
from rayx.cluster_utils import Cluster
from rayx.runtime import context
from rayx.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from helpers import wait_for

pytestmark = pytest.mark.timeout(300)

BIG = 200_000          # int64s: 1.6 MB, in the arena of the node that made it


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    c.add_node(num_cpus=1)
    c.add_node(num_cpus=1, object_store_memory=200 << 20)
    c.add_node(num_cpus=1, object_store_memory=200 << 20)
    c.connect()
    yield c
    c.shutdown()


def on(node):
    return NodeAffinitySchedulingStrategy(node.node_id.hex(), soft=False)


@rayx.remote
class Keeper:
    def __init__(self):
        self.refs = []

    def keep(self, refs):
        self.refs.extend(refs)
        return len(self.refs)

    def read(self):
        return [int(rayx.get(ref, timeout=60)[0]) for ref in self.refs]

    def drop(self):
        self.refs = []
        gc.collect()
        return True


@rayx.remote
def make(i):
    return np.full(BIG, i, dtype=np.int64)


@rayx.remote
def keep_in(keeper, refs):
    return rayx.get(keeper.keep.remote(refs))


def in_this_nodes_arena(object_id):
    return context.core_worker().arena.contains(object_id)


def test_a_put_kept_by_an_actor_on_another_node_outlives_the_owners_ref(cluster):
    keeper = Keeper.options(scheduling_strategy=on(cluster.worker_nodes[0])).remote()
    ref = rayx.put(np.full(BIG, 7, dtype=np.int64))
    object_id = ref.binary()
    assert rayx.get(keeper.keep.remote([ref]), timeout=60) == 1
    del ref
    gc.collect()
    # The driver's node still keeps it, for the borrower.
    assert rayx.get(keeper.read.remote(), timeout=60) == [7]
    assert in_this_nodes_arena(object_id)
    assert rayx.get(keeper.drop.remote(), timeout=60)
    assert wait_for(lambda: not in_this_nodes_arena(object_id), timeout=30), \
        "the object was not freed once its borrower let go"
    rayx.kill(keeper)


def test_a_task_result_lent_on_through_two_nodes(cluster):
    """The driver owns a result made on one node; a task on that node hands the
    ref to an actor on the other node; the driver drops its ref; the actor reads."""
    second, third = cluster.worker_nodes
    keeper = Keeper.options(scheduling_strategy=on(third)).remote()
    ref = make.options(scheduling_strategy=on(second), max_retries=0).remote(3)   # never rebuilt
    rayx.wait([ref], timeout=60)
    assert rayx.get(keep_in.options(scheduling_strategy=on(second)).remote(keeper, [ref]), timeout=60) == 1
    del ref
    gc.collect()
    assert rayx.get(keeper.read.remote(), timeout=60) == [3]
    assert rayx.get(keeper.drop.remote(), timeout=60)
    rayx.kill(keeper)


def test_a_borrower_that_dies_lets_go(cluster):
    """(Last: it kills a node of the module's cluster.)"""
    borrower = cluster.worker_nodes[0]
    keeper = Keeper.options(scheduling_strategy=on(borrower)).remote()
    ref = rayx.put(np.full(BIG, 5, dtype=np.int64))
    object_id = ref.binary()
    assert rayx.get(keeper.keep.remote([ref]), timeout=60) == 1
    del ref
    gc.collect()
    assert rayx.get(keeper.read.remote(), timeout=60) == [5]
    assert in_this_nodes_arena(object_id)           # kept for the borrower
    cluster.remove_node(borrower, allow_graceful=False, wait=True)
    assert wait_for(lambda: not in_this_nodes_arena(object_id), timeout=60), \
        "the object was not freed when its borrower's node died"
