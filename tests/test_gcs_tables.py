"""The GCS tables (rayx.gcs.tables) on real redis-server shards: each table
round-trips its value type and lives where its definition says; a row that
does not decode reads as absent and leaves the listings working; the helpers
(object_locations, alive_nodes, named_actor_key) agree with what the runtime
writes."""
import os
import time

import pytest

from helpers import running_gcs
from rayx.runtime import task_events
from rayx._core import codec
from rayx.cluster_utils import Cluster
from rayx.gcs import GcsClient, tables
from rayx.util import state

PASSWORD = "tables-test-token"
NODE_A, NODE_B, NODE_C = (bytes([n]) * 16 for n in (1, 2, 3))


@pytest.fixture
def client(tmp_path):
    with running_gcs(tmp_path / "gcs", PASSWORD, num_data_shards=2) as shards:
        c = GcsClient(shards[0].address, PASSWORD)
        yield c
        c.close()


def node_record(node_id, state=tables.NODE_ALIVE, heartbeat=None, **extra):
    record = {"node_id": node_id, "state": state, "node_ip_address": "127.0.0.1", "is_head": False,
              "resources_total": {"CPU": 2.0}, "resources_available": {"CPU": 1.5}, "pending_tasks": 0,
              "running_tasks": 1, "workers": 2, "objects": 3, "infeasible": [{"GPU": 1.0}],
              "heartbeat": time.time() if heartbeat is None else heartbeat, "avg_task_seconds": 0.002}
    record.update(extra)
    return record


def task_spec(task_id, name="mod.f"):
    return codec.TaskSpec(task_id=task_id, job_id=b"\x01\x00\x00\x00", function_name=name,
                          resources={"CPU": 1.0}, num_returns=2, max_retries=3)


def events_row(task_id, name="mod.f", error_type=None, attempt=0):
    common = {"node_id": NODE_A, "node_ip_address": "127.0.0.1", "worker_id": b"w" * 16, "pid": 1234}
    event = (task_id, name, b"\x01\x00\x00\x00", b"", codec.NORMAL_TASK, attempt, 10.0, 10.5, error_type)
    return {"common": common, "events": [event]}


# ---------------------------------------------------------------- round trips

def test_each_table_round_trips_its_value(client):
    actor_id = os.urandom(16)
    task_id = os.urandom(16)
    object_id = task_id + (1).to_bytes(4, "little")
    rows = [
        (tables.NODES, NODE_A, node_record(NODE_A)),
        (tables.JOBS, b"\x01\x00\x00\x00", {"job_id": b"\x01\x00\x00\x00", "namespace": "ns",
                                            "driver_pid": 42, "start_time": 1.5, "sys_path": ["/a"]}),
        (tables.NAMED_ACTORS, tables.named_actor_key("ns", "keeper"), {"actor_id": actor_id}),
        (tables.ACTORS, actor_id, {"actor_id": actor_id, "class_name": "Keeper",
                                   "state": tables.ACTOR_ALIVE, "pid": 7, "restarts": 0}),
        (tables.FUNCTIONS, b"f" * 20, b"\x80\x05 a pickle"),
        (tables.TASK_EVENTS, b"w" * 16 + (1).to_bytes(8, "big"), events_row(task_id)),
    ]
    for table, key, value in rows:
        table.put(client, key, value)
        assert table.get(client, key) == value, table
        assert table.scan(client) == {key: value}, table
        assert table.get_many(client, [b"absent", key]) == [None, value], table

    spec = task_spec(task_id)
    tables.TASKS.put(client, task_id, tables.Lineage(NODE_A, spec))
    lineage = tables.TASKS.get(client, task_id)
    assert (lineage.node_id, lineage.spec.encode()) == (NODE_A, spec.encode())
    assert [row.spec.encode() for row in tables.TASKS.scan(client).values()] == [spec.encode()]

    tables.OBJECTS.put(client, object_id, tables.ObjectLocation(NODE_A, 1234))
    location = tables.OBJECTS.get(client, object_id)
    assert (location.node_id, location.size) == (NODE_A, 1234)

    tables.OBJECT_COPIES.add(client, object_id, NODE_B, 1234)
    tables.OBJECT_COPIES.add(client, object_id, NODE_C, 1234)
    assert tables.OBJECT_COPIES.get(client, object_id) == {NODE_B: 1234, NODE_C: 1234}
    assert tables.OBJECT_COPIES.scan(client) == {object_id: {NODE_B: 1234, NODE_C: 1234}}
    assert tables.OBJECT_COPIES.get(client, b"absent") == {}

    # The event row reads back as the events the worker recorded.
    event = task_events.latest_events(tables.TASK_EVENTS.scan(client).values())[task_id]
    assert (event["name"], event["state"], event["pid"]) == ("mod.f", task_events.FINISHED, 1234)


def test_put_if_absent_and_delete(client):
    assert tables.FUNCTIONS.put_if_absent(client, b"f1", b"one") is True
    assert tables.FUNCTIONS.put_if_absent(client, b"f1", b"two") is False
    assert tables.FUNCTIONS.get(client, b"f1") == b"one"
    tables.FUNCTIONS.delete(client, b"f1")
    assert tables.FUNCTIONS.get(client, b"f1") is None


def test_writes_through_a_batch_writer(client):
    writer = client.batch_writer()
    tables.NODES.put(writer, NODE_A, node_record(NODE_A))
    tables.OBJECT_COPIES.add(writer, b"o" * 20, NODE_B, 5)
    writer.flush(timeout=30)
    assert tables.NODES.get(client, NODE_A)["node_id"] == NODE_A
    assert tables.OBJECT_COPIES.get(client, b"o" * 20) == {NODE_B: 5}


def test_cluster_tables_live_on_the_primary(client):
    assert tables.CLUSTER_TABLES == {"nodes", "jobs", "named_actors"}
    assert tables.CLUSTER_TABLES == {table.name for table in tables.TABLES if table.cluster}
    primary = client.address
    keys = [os.urandom(16) for _ in range(50)]
    for table in tables.TABLES:
        shards = {client.shard_address(table.name, key) for key in keys}
        if table.cluster:
            assert shards == {primary}, table
        else:
            assert primary not in shards and len(shards) == 2, table


# ------------------------------------------------------------ bad rows

GARBAGE = {
    tables.NODES: b"\xff not a codec value",
    tables.JOBS: b"",
    tables.NAMED_ACTORS: codec.dumps(["valid codec", "not a record"]),
    tables.ACTORS: codec.dumps("valid codec") + b"\x00 trailing",
    tables.TASKS: NODE_A + codec.dumps([1, 2]),     # a node id, then valid codec that is no TaskSpec
    tables.OBJECTS: b"too short",
    tables.TASK_EVENTS: b"\x07",                   # truncated
}


@pytest.mark.parametrize("table", list(GARBAGE), ids=lambda t: t.name)
def test_a_row_that_does_not_decode_reads_as_absent(client, table):
    good = {"fine": True} if table is not tables.TASKS else tables.Lineage(NODE_A, task_spec(b"t" * 16))
    if table is tables.OBJECTS:
        good = tables.ObjectLocation(NODE_A, 7)
    table.put(client, b"good", good)
    client.put(table.name, b"bad", GARBAGE[table])
    assert table.get(client, b"bad") is None
    assert table.get_many(client, [b"bad", b"good"])[0] is None
    assert table.get_many(client, [b"bad", b"good"])[1] is not None
    assert list(table.scan(client)) == [b"good"]


def test_object_rows_with_a_bad_size(client):
    client.put(tables.OBJECTS.name, b"o1", NODE_A + b"12x")
    assert tables.OBJECTS.get(client, b"o1") is None
    client.hset(tables.OBJECT_COPIES.name, b"o2", NODE_B, b"many")
    assert tables.OBJECT_COPIES.get(client, b"o2") == {NODE_B: 0}


def test_listings_leave_bad_rows_out(client):
    task_id = b"t" * 16
    object_id = task_id + (1).to_bytes(4, "little")
    actor_id = b"a" * 16
    tables.NODES.put(client, NODE_A, node_record(NODE_A, is_head=True))
    tables.ACTORS.put(client, actor_id, {"actor_id": actor_id, "class_name": "Keeper",
                                         "state": tables.ACTOR_ALIVE, "pid": 7})
    tables.TASKS.put(client, task_id, tables.Lineage(NODE_A, task_spec(task_id, "mod.make")))
    tables.OBJECTS.put(client, object_id, tables.ObjectLocation(NODE_A, 100))
    tables.OBJECT_COPIES.add(client, object_id, NODE_B, 100)
    tables.TASK_EVENTS.put(client, b"w" * 24, events_row(task_id, "mod.make"))
    for table, garbage in GARBAGE.items():
        client.put(table.name, b"b" * 16, garbage)
    client.put(tables.TASK_EVENTS.name, b"x" * 24, codec.dumps({"common": {}, "events": [(1, 2)]}))

    assert [n["node_id"] for n in state.list_nodes(gcs=client)] == [NODE_A.hex()]
    assert [a["actor_id"] for a in state.list_actors(gcs=client)] == [actor_id.hex()]
    assert state.get_actor("62" * 16, gcs=client) is None
    tasks = state.list_tasks(gcs=client)
    assert [(t["task_id"], t["name"], t["state"]) for t in tasks] == [
        (task_id.hex(), "mod.make", task_events.FINISHED)]
    assert state.get_task("62" * 16, gcs=client) is None
    objects = state.list_objects(gcs=client)
    assert [(o["object_id"], o["size"], o["node_id"], o["copies"], o["creator"]) for o in objects] == [
        (object_id.hex(), 100, NODE_A.hex(), [NODE_B.hex()], "mod.make")]
    assert len(state.timeline_events(gcs=client)) == 1


# ------------------------------------------------------------ helpers

def test_object_locations_merges_the_primary_and_the_copies(client):
    both, copies_only, primary_only = (os.urandom(20) for _ in range(3))
    tables.OBJECTS.put(client, both, tables.ObjectLocation(NODE_A, 100))
    tables.OBJECT_COPIES.add(client, both, NODE_B, 100)
    tables.OBJECT_COPIES.add(client, both, NODE_C, 100)
    tables.OBJECT_COPIES.add(client, copies_only, NODE_B, 5)
    tables.OBJECTS.put(client, primary_only, tables.ObjectLocation(NODE_C, 0))
    assert tables.object_locations(client, both) == {NODE_A: 100, NODE_B: 100, NODE_C: 100}
    assert tables.object_locations(client, copies_only) == {NODE_B: 5}
    assert tables.object_locations(client, primary_only) == {NODE_C: 0}
    assert tables.object_locations(client, os.urandom(20)) == {}


def test_alive_nodes_leaves_out_dead_nodes(client):
    tables.NODES.put(client, NODE_A, node_record(NODE_A))
    tables.NODES.put(client, NODE_B, node_record(NODE_B, state=tables.NODE_DEAD))
    tables.NODES.put(client, NODE_C, node_record(NODE_C, heartbeat=time.time() - 3600))
    client.put(tables.NODES.name, b"d" * 16, codec.dumps(127))     # not a record
    assert set(tables.alive_nodes(client)) == {NODE_A, NODE_C}
    now = time.time()
    records = tables.NODES.scan(client)
    assert [tables.is_responsive(records[n], now) for n in (NODE_A, NODE_B, NODE_C)] == [True, False, False]
    listed = {n["node_id"]: n["state"] for n in state.list_nodes(gcs=client)}
    assert listed == {NODE_A.hex(): tables.NODE_ALIVE, NODE_B.hex(): tables.NODE_DEAD,
                      NODE_C.hex(): tables.NODE_DEAD}


def test_named_actors_and_node_states_of_a_real_cluster():
    """What the runtime writes: a named actor is registered under named_actor_key; a
    node that stopped reads DEAD, and alive_nodes leaves it out."""
    import rayx

    @rayx.remote(num_cpus=0)
    class Keeper:
        def ping(self):
            return "pong"

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, object_store_memory=64 << 20))
    try:
        cluster.connect(namespace="tables-ns")
        keeper = Keeper.options(name="keeper").remote()
        assert rayx.get(keeper.ping.remote(), timeout=60) == "pong"
        worker = cluster.add_node(num_cpus=1, object_store_memory=64 << 20)
        gcs = GcsClient(cluster.address, cluster.password)
        try:
            entry = tables.NAMED_ACTORS.get(gcs, tables.named_actor_key("tables-ns", "keeper"))
            listed = state.list_actors(filters=[("name", "=", "keeper")], gcs=gcs)
            assert [a["actor_id"] for a in listed] == [entry["actor_id"].hex()]
            assert set(tables.alive_nodes(gcs)) == {cluster.head_node.node_id, worker.node_id}

            cluster.remove_node(worker)
            assert tables.NODES.get(gcs, worker.node_id)["state"] == tables.NODE_DEAD
            assert set(tables.alive_nodes(gcs)) == {cluster.head_node.node_id}
        finally:
            gcs.close()
    finally:
        cluster.shutdown()
