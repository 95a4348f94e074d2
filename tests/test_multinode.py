"""Several nodes on one machine (distinct loopback addresses): placement by
resources and strategies, object transfer between nodes, locality, actors on
other nodes, and tasks waiting for a node that fits."""
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rayx
from rayx.cluster_utils import Cluster
from rayx.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rayx.gcs import tables
from rayx.runtime import context


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    c.add_node(num_cpus=1, object_store_memory=400 << 20)
    c.add_node(num_cpus=1, resources={"b": 1}, object_store_memory=400 << 20)
    c.add_node(num_cpus=1, resources={"c": 1}, object_store_memory=400 << 20)
    c.connect()
    yield c
    c.shutdown()


def node_id_of(node):
    return node.node_id.hex()


@rayx.remote
def where():
    return rayx.get_runtime_context().get_node_id()


def node_records():
    return {info["node_id"].hex(): info for info in tables.NODES.scan(context.gcs()).values()}


def test_nodes_and_resources(cluster):
    alive = [n for n in rayx.nodes() if n["Alive"]]
    assert len(alive) == 3
    resources = rayx.cluster_resources()
    assert resources["CPU"] == 3 and resources["b"] == 1 and resources["c"] == 1


def test_custom_resource_runs_on_its_node(cluster):
    b, c = cluster.worker_nodes
    assert rayx.get(where.options(resources={"b": 1}).remote(), timeout=60) == node_id_of(b)
    assert rayx.get(where.options(resources={"c": 0.5}).remote(), timeout=60) == node_id_of(c)


def test_spread(cluster):
    @rayx.remote
    def slow_where():
        time.sleep(0.3)
        return rayx.get_runtime_context().get_node_id()

    refs = [slow_where.options(scheduling_strategy="SPREAD").remote() for _ in range(6)]
    assert len(set(rayx.get(refs, timeout=120))) >= 2


def test_node_affinity_hard_and_soft(cluster):
    c = cluster.worker_nodes[1]
    hard = NodeAffinitySchedulingStrategy(node_id_of(c), soft=False)
    assert set(rayx.get([where.options(scheduling_strategy=hard).remote() for _ in range(3)],
                        timeout=60)) == {node_id_of(c)}
    missing = NodeAffinitySchedulingStrategy("ab" * 16, soft=True)
    assert rayx.get(where.options(scheduling_strategy=missing).remote(), timeout=60) in {
        node_id_of(n) for n in cluster.list_all_nodes()}


def test_large_object_across_nodes_transferred_once(cluster):
    b, c = cluster.worker_nodes

    @rayx.remote(resources={"b": 1})
    def produce():
        return np.arange(100 * 1024 * 1024 // 8, dtype=np.int64)  # 100 MB

    @rayx.remote(resources={"c": 0.2}, num_cpus=0)
    def consume(arr):
        return int(arr[-1]), arr.nbytes, rayx.get_runtime_context().get_node_id()

    ref = produce.remote()
    before = node_records()[node_id_of(c)]["object_pulls"]
    results = rayx.get([consume.remote(ref) for _ in range(4)], timeout=300)
    n = 100 * 1024 * 1024 // 8
    assert all(r == (n - 1, n * 8, node_id_of(c)) for r in results)
    deadline = time.time() + 10
    while time.time() < deadline:
        pulls = node_records()[node_id_of(c)]["object_pulls"] - before
        if pulls:
            break
        time.sleep(0.1)
    assert pulls == 1
    # The driver's node gets it too, intact.
    arr = rayx.get(ref, timeout=300)
    assert arr[0] == 0 and arr[-1] == n - 1


def test_locality_runs_task_where_its_input_lives(cluster):
    b = cluster.worker_nodes[0]

    @rayx.remote(resources={"b": 1})
    def produce():
        return np.ones(50 * 1024 * 1024, dtype=np.uint8)

    @rayx.remote
    def consume(arr):
        return rayx.get_runtime_context().get_node_id()

    ref = produce.remote()
    ready, _ = rayx.wait([ref], timeout=120, fetch_local=False)
    assert ready
    time.sleep(0.3)  # let heartbeats show node b idle again
    assert rayx.get(consume.remote(ref), timeout=120) == node_id_of(b)


def test_actor_on_other_node_keeps_per_caller_order(cluster):
    c = cluster.worker_nodes[1]

    @rayx.remote(resources={"c": 0.1}, num_cpus=0)
    class Log:
        def __init__(self):
            self.items = []

        def add(self, caller, i):
            self.items.append((caller, i))

        def items_and_node(self):
            return self.items, rayx.get_runtime_context().get_node_id()

    log = Log.remote()

    @rayx.remote(num_cpus=0)
    def caller(handle, name, n):
        rayx.get([handle.add.remote(name, i) for i in range(n)])
        return name

    b = cluster.worker_nodes[0]
    head = cluster.head_node
    done = [caller.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id_of(node), False))
            .remote(log, name, 30) for node, name in ((head, "A"), (b, "B"))]
    for i in range(30):
        log.add.remote("driver", i)
    assert sorted(rayx.get(done, timeout=120)) == ["A", "B"]
    items, node = rayx.get(log.items_and_node.remote(), timeout=60)
    assert node == node_id_of(c)
    for name in ("A", "B", "driver"):
        assert [i for who, i in items if who == name] == list(range(30))


def test_task_waits_for_a_node_that_fits(cluster):
    ref = where.options(resources={"late": 1}).remote()
    ready, _ = rayx.wait([ref], timeout=1)
    assert not ready
    node = cluster.add_node(num_cpus=1, resources={"late": 1}, object_store_memory=64 << 20)
    try:
        assert rayx.get(ref, timeout=120) == node_id_of(node)
    finally:
        cluster.remove_node(node)


def test_second_driver_joins_by_address(cluster):
    driver = textwrap.dedent(f"""
        import rayx
        rayx.init(address={cluster.address!r}, _redis_password={cluster.password!r})

        @rayx.remote(resources={{"c": 0.1}}, num_cpus=0)
        def square(x):
            return x * x

        print("RESULT", sum(rayx.get([square.remote(i) for i in range(10)], timeout=120)),
              len([n for n in rayx.nodes() if n["Alive"]]))
        rayx.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", driver], timeout=180, capture_output=True, text=True)
    assert "RESULT 285 3" in out.stdout, out.stderr


def test_grpc_refuses_calls_without_the_cluster_token(cluster):
    import grpc
    from rayx.protos import rayx_pb2, rayx_pb2_grpc
    head = [info for info in tables.NODES.scan(context.gcs()).values() if info.get("is_head")][0]
    address = head["grpc_address"]
    assert address.startswith("127.")
    channel = grpc.insecure_channel(address)
    stub = rayx_pb2_grpc.NodeServiceStub(channel)
    request = rayx_pb2.ForwardTasksRequest(from_node_id=b"x" * 16, specs=[b"not a spec"])
    for metadata in ((), (("rayx-token", "wrong"),)):
        with pytest.raises(grpc.RpcError) as info:
            stub.ForwardTasks(request, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    pull = stub.PullObject(rayx_pb2.PullObjectRequest(object_id=b"\0" * 20), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        list(pull)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()
    # The raylet is still fine.
    assert rayx.get(where.remote(), timeout=60)

