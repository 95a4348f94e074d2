"""How a driver process joins a cluster and leaves it.

``connect`` finds the cluster to join (in Ray's order: the address given, then
RAYX_ADDRESS / RAY_ADDRESS, then the live cluster ``rayx start`` recorded on
this machine) or starts a local node that dies with the driver, registers the
job in the GCS ``jobs`` table and makes the process's CoreWorker. The state
it makes lives in ``rayx.runtime.context``; ``core_worker()`` is how the public
API reaches it, connecting first (as ``rayx.init()`` with no arguments) when
the process is not connected yet, as Ray does.
"""
import os
import sys
import threading
import time

from rayx import node as node_mod
from rayx._core.ids import WorkerID
from rayx._core.objectref import install_runtime
from rayx.gcs import GcsClient, tables
from rayx.runtime import context
from rayx.runtime.core_worker import CoreWorker

LOCK = threading.RLock()      # held while this process connects or disconnects


def core_worker():
    """This process's CoreWorker; a driver not connected yet connects first."""
    core = context.core_worker()
    if core is None:
        with LOCK:
            core = context.core_worker() or connect()
    return core


install_runtime(future_of=lambda ref: core_worker().future_of(ref))   # ObjectRef.future()


def connect(address=None, *, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
            namespace=None, node_ip_address="127.0.0.1", redis_password=None):
    """Join the cluster at ``address`` (see ``resolve_address``) or start a local node;
    this process's CoreWorker. The caller holds LOCK and checked that the process is
    not connected."""
    address = resolve_address(address)
    node = None
    if address is None:
        node = node_mod.Node(head=True, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                             object_store_memory=object_store_memory, node_ip_address=node_ip_address)
        node.start()
        gcs_address, password = node.gcs_address, node.password
        socket_path, session_dir = node.socket_path, node.session_dir
    else:
        if any(v is not None for v in (num_cpus, num_gpus, resources, object_store_memory)):
            raise ValueError(f"When connecting to an existing cluster (address={address!r}), num_cpus, "
                             "num_gpus, resources and object_store_memory must not be given; set them "
                             "with `rayx start`, or pass address='local' to start a new local cluster.")
        gcs_address, password, socket_path, session_dir = find_cluster(address, redis_password)
    try:
        gcs = GcsClient(gcs_address, password)
        job_id = gcs.incr(tables.JOB_COUNTER).to_bytes(4, "big")
        namespace = namespace or f"anonymous-{job_id.hex()}"
        job_info = {"driver_pid": os.getpid(), "start_time": time.time(), "namespace": namespace,
                    "sys_path": [os.path.abspath(p or ".") for p in sys.path], "cwd": os.getcwd()}
        tables.JOBS.put(gcs, job_id, job_info)
        core = CoreWorker("driver", socket_path, gcs, job_id, WorkerID.from_random().binary(),
                          job_info={"namespace": namespace})
    except BaseException:
        if node is not None:
            node.stop()
        raise
    context.connect(core, gcs, session_dir, namespace, node)
    return core


def resolve_address(address):
    """Where ``connect`` goes, in Ray's order: the ``address`` argument, then RAYX_ADDRESS
    / RAY_ADDRESS, then the cluster ``rayx start`` runs on this machine ("auto"); None
    (or "local") starts a new local cluster."""
    if address is None:
        address = os.environ.get("RAYX_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if address is None and node_mod.live_cluster_record() is not None:
        address = "auto"
    return None if address in ("local", "") else address


def find_cluster(address, password):
    """(gcs address, password, raylet socket, session dir) of the cluster at ``address``."""
    record = node_mod.live_cluster_record()
    if address == "auto":
        if not record:
            raise ConnectionError("Could not find a running rayx cluster on this machine "
                                  f"(no live one recorded in {node_mod.CLUSTER_FILE}); "
                                  "start one with `rayx start --head`.")
        gcs_address = record["gcs_address"]
    else:
        gcs_address = address
        node_mod.check_reachable(gcs_address)
        if record and record.get("gcs_address") != gcs_address:
            record = None
    if password is None:
        password = os.environ.get("RAYX_CLUSTER_TOKEN")
    if password is None and record:
        password = node_mod.read_token(record["session_dir"])
    if password is None:
        raise ConnectionError(f"No cluster token for {gcs_address}: set RAYX_CLUSTER_TOKEN or run on "
                              "the machine where `rayx start --head` ran.")
    if record:
        for node in record.get("nodes", []):
            if node.get("raylet_socket") and os.path.exists(node["raylet_socket"]):
                return gcs_address, password, node["raylet_socket"], node["session_dir"]
    # Find a node of this machine in the GCS node table.
    gcs = GcsClient(gcs_address, password)
    try:
        nodes = sorted(tables.alive_nodes(gcs).values(), key=lambda node: not node.get("is_head"))
        for node in nodes:
            if os.path.exists(node.get("raylet_socket", "")):
                return gcs_address, password, node["raylet_socket"], node["session_dir"]
    finally:
        gcs.close()
    raise ConnectionError(f"No live rayx node of the cluster at {gcs_address} runs on this machine.")


def disconnect():
    """Leave the cluster: close the core worker and the GCS client, and stop the node
    ``connect`` started."""
    with LOCK:
        core, gcs, node = context.disconnect()
        if core is not None:
            try:
                core.shutdown()
            except Exception:
                pass
        if gcs is not None:
            try:
                gcs.close()
            except Exception:
                pass
        if node is not None:
            node.stop()
