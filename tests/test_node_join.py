"""A node joining a cluster that ran alone: what was made before is found from it."""
import rayx
from rayx.cluster_utils import Cluster


@rayx.remote
def where():
    return rayx.get_runtime_context().get_node_id()


def test_small_objects_made_before_a_node_joins_are_found():
    c = Cluster()
    try:
        c.add_node(num_cpus=1, object_store_memory=64 << 20)
        c.connect()
        small = rayx.put({"made": "before"})
        rayx.get(where.remote(), timeout=60)      # the head runs alone for a while
        node = c.add_node(num_cpus=1, resources={"late2": 1}, object_store_memory=64 << 20)

        @rayx.remote(resources={"late2": 1})
        def read(x):
            return x["made"], rayx.get_runtime_context().get_node_id()

        assert rayx.get(read.remote(small), timeout=120) == ("before", node.node_id.hex())
    finally:
        c.shutdown()
