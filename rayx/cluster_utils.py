"""A cluster of several rayx nodes on one machine, for tests and experiments.

Each node is a full node (its own raylet, arena, workers and gRPC address on
its own loopback address 127.0.0.N); the head also runs the GCS shards and the
global scheduler. As Ray's ``ray.cluster_utils.Cluster``.
"""
import time

from rayx import api
from rayx.gcs import GcsClient, tables
from rayx.node import Node


class Cluster:
    def __init__(self, initialize_head=False, connect=False, head_node_args=None):
        self.head_node = None
        self.worker_nodes = []
        self._next_ip = 2
        self._connected = False
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()

    @property
    def address(self):
        return self.head_node.gcs_address

    @property
    def password(self):
        return self.head_node.password

    def add_node(self, num_cpus=1, num_gpus=None, resources=None, object_store_memory=128 << 20,
                 wait=True, **kwargs):
        """Start a node (the first one is the head) and return it."""
        if self.head_node is None:
            node = Node(head=True, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                        object_store_memory=object_store_memory, node_ip_address="127.0.0.1", **kwargs)
            node.start()
            self.head_node = node
        else:
            ip = kwargs.pop("node_ip_address", None)
            if ip is None:
                ip = f"127.0.0.{self._next_ip}"
                self._next_ip += 1
            node = Node(head=False, gcs_address=self.address, password=self.password,
                        session_dir=self.head_node.session_dir, num_cpus=num_cpus, num_gpus=num_gpus,
                        resources=resources, object_store_memory=object_store_memory,
                        node_ip_address=ip, **kwargs)
            node.start()
            self.worker_nodes.append(node)
        if wait:
            self._wait_for(lambda nodes: node.node_id in nodes)
        return node

    def remove_node(self, node, allow_graceful=True, wait=True):
        """Stop a node; with ``allow_graceful=False`` SIGKILL its raylet (a crash: the
        head's monitor finds it dead). ``wait``: until the GCS says it is dead."""
        if allow_graceful:
            node.stop()
        else:
            node.kill()
        if node is self.head_node:
            self.head_node = None
            return
        self.worker_nodes.remove(node)
        if wait:
            self._wait_for(lambda nodes: node.node_id not in nodes)

    def _alive_nodes(self):
        gcs = GcsClient(self.address, self.password)
        try:
            return tables.alive_nodes(gcs)
        finally:
            gcs.close()

    def _wait_for(self, condition, timeout=60.0):
        """Until ``condition`` holds of the records of the alive nodes, by node id."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition(self._alive_nodes()):
                return
            time.sleep(0.05)
        raise TimeoutError("the cluster did not reach the expected node states in time")

    def wait_for_nodes(self, timeout=60.0):
        """Wait until every node of this Cluster is alive in the GCS."""
        ids = [n.node_id for n in [self.head_node] + self.worker_nodes]
        self._wait_for(lambda nodes: all(i in nodes for i in ids), timeout)

    def connect(self, namespace=None):
        api.init(address=self.address, _redis_password=self.password, namespace=namespace)
        self._connected = True

    def list_all_nodes(self):
        return [self.head_node] + list(self.worker_nodes)

    def shutdown(self):
        if self._connected:
            api.shutdown()
            self._connected = False
        for node in list(self.worker_nodes):
            node.stop()
        self.worker_nodes = []
        if self.head_node is not None:
            self.head_node.stop()
            self.head_node = None
