"""The public functions of rayx: init, shutdown, remote, get, put, wait, and the
cluster-information calls. They work the same in a driver and inside tasks.

A driver process has one CoreWorker connected to the raylet of its node.
``init()`` without an address (nor RAYX_ADDRESS / RAY_ADDRESS) joins the cluster
``rayx start`` runs on this machine, if any, and otherwise starts a node that
dies with the driver (GCS shards, a raylet and its workers);
``init(address="local")`` always starts one.
"""
import atexit
import os
import sys
import threading
import time

from rayx import node as node_mod
from rayx import options as opts
from rayx._core import codec
from rayx._core.objectref import install_runtime, unique_ids_of
from rayx.object_ref import ObjectRef

_lock = threading.RLock()
_worker = None      # this process's CoreWorker
_node = None        # the Node this driver started, if any
_gcs = None
_namespace = None
_session_dir = None


def is_initialized():
    return _worker is not None


def _global_worker():
    if _worker is None:
        init()
    return _worker


install_runtime(future_of=lambda ref: _global_worker().future_of(ref))   # ObjectRef.future()


def _connect_worker(core, gcs, session_dir):
    """Inside a worker process: make the API use this process's core worker."""
    global _worker, _gcs, _session_dir
    _worker, _gcs, _session_dir = core, gcs, session_dir


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
         namespace=None, ignore_reinit_error=False, log_to_driver=True, runtime_env=None,
         include_dashboard=None, logging_level=None, _node_ip_address="127.0.0.1",
         _redis_password=None, **kwargs):
    """Connect to a running cluster (``address="auto"``, "host:port", or found as
    ``_resolve_address`` says), or start a local node (``address="local"``, or none found)."""
    global _worker, _node, _gcs, _namespace, _session_dir
    with _lock:
        if _worker is not None:
            if ignore_reinit_error:
                return RayContext(_worker)
            raise RuntimeError("Maybe you called rayx.init twice by accident? This error can be "
                               "suppressed by passing in 'ignore_reinit_error=True' or by calling "
                               "'rayx.shutdown()' prior to 'rayx.init()'.")
        unknown = set(kwargs) - {"configure_logging", "local_mode", "dashboard_host", "dashboard_port",
                                 "_system_config", "_temp_dir", "job_config", "storage", "labels"}
        if unknown:
            raise TypeError(f"init() got unexpected keyword argument(s) {sorted(unknown)}")
        opts.check_runtime_env(runtime_env, "rayx.init()")
        opts.check_runtime_env(getattr(kwargs.get("job_config"), "runtime_env", None), "the job_config")
        address = _resolve_address(address)
        if address is None:
            node = node_mod.Node(head=True, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                 object_store_memory=object_store_memory, node_ip_address=_node_ip_address)
            node.start()
            _node = node
            gcs_address, password = node.gcs_address, node.password
            socket_path, session_dir = node.socket_path, node.session_dir
        else:
            if any(v is not None for v in (num_cpus, num_gpus, resources, object_store_memory)):
                raise ValueError(f"When connecting to an existing cluster (address={address!r}), num_cpus, "
                                 "num_gpus, resources and object_store_memory must not be given; set them "
                                 "with `rayx start`, or pass address='local' to start a new local cluster.")
            gcs_address, password, socket_path, session_dir = _find_cluster(address, _redis_password)
        from rayx.core_worker import CoreWorker
        from rayx.gcs import GcsClient
        try:
            gcs = GcsClient(gcs_address, password)
            job_number = gcs.incr("job")
            job_id = job_number.to_bytes(4, "big")
            _namespace = namespace or f"anonymous-{job_id.hex()}"
            job_info = {"driver_pid": os.getpid(), "start_time": time.time(), "namespace": _namespace,
                        "sys_path": [os.path.abspath(p or ".") for p in sys.path], "cwd": os.getcwd()}
            gcs.put("jobs", job_id, codec.dumps(job_info))
            from rayx._core.ids import WorkerID
            _worker = CoreWorker("driver", socket_path, gcs, job_id, WorkerID.from_random().binary(),
                                 job_info={"namespace": _namespace})
            _gcs = gcs
            _session_dir = session_dir
        except BaseException:
            if _node is not None:
                _node.stop()
                _node = None
            raise
        return RayContext(_worker)


def _resolve_address(address):
    """Where ``init`` connects, in Ray's order: the ``address`` argument, then RAYX_ADDRESS
    / RAY_ADDRESS, then the cluster ``rayx start`` runs on this machine ("auto"); None
    (or "local") starts a new local cluster."""
    if address is None:
        address = os.environ.get("RAYX_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if address is None and node_mod.live_cluster_record() is not None:
        address = "auto"
    return None if address in ("local", "") else address


def _find_cluster(address, password):
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
    from rayx.gcs import GcsClient
    gcs = GcsClient(gcs_address, password)
    try:
        infos = sorted((codec.loads(blob) for blob in gcs.scan("nodes").values()),
                       key=lambda info: not info.get("is_head"))
        for info in infos:
            if info.get("state") == "ALIVE" and os.path.exists(info.get("raylet_socket", "")):
                return gcs_address, password, info["raylet_socket"], info["session_dir"]
    finally:
        gcs.close()
    raise ConnectionError(f"No live rayx node of the cluster at {gcs_address} runs on this machine.")


def shutdown():
    """Disconnect from the cluster and stop the processes ``init()`` started."""
    global _worker, _node, _gcs
    with _lock:
        worker, node, gcs = _worker, _node, _gcs
        _worker = _node = _gcs = None
        if worker is not None:
            try:
                worker.shutdown()
            except Exception:
                pass
        if gcs is not None:
            try:
                gcs.close()
            except Exception:
                pass
        if node is not None:
            node.stop()


atexit.register(shutdown)


class RayContext(dict):
    """What ``init`` returns: the addresses of the cluster, also usable as a context manager."""

    def __init__(self, worker):
        super().__init__(address_info={"node_id": worker.node_id.hex(), "session_dir": _session_dir,
                                       "gcs_address": _gcs.address if _gcs else None})
        self.address_info = self["address_info"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()


# ------------------------------------------------------------------ objects

def get(object_refs, *, timeout=None):
    """The value of an ObjectRef, or the values of a list of them (raising the task's error)."""
    worker = _global_worker()
    if isinstance(object_refs, ObjectRef):
        return worker.get([object_refs], timeout)[0]
    if isinstance(object_refs, (list, tuple)):
        for ref in object_refs:
            if not isinstance(ref, ObjectRef):
                raise TypeError(f"get() expects ObjectRefs, got a {type(ref).__name__} in the list")
        return worker.get(list(object_refs), timeout)
    raise TypeError(f"get() expects an ObjectRef or a list of ObjectRefs, got {type(object_refs).__name__}")


def put(value, *, _owner=None):
    """Store a value in the object store and return an ObjectRef to it."""
    if isinstance(value, ObjectRef):
        raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
                        "you can wrap the ObjectRef in a list and call 'put' on it.")
    return _global_worker().put(value)


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    """(ready, not_ready) lists, in input order, once ``num_returns`` refs are ready or time is up."""
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expects a list of ObjectRefs, got {type(object_refs).__name__}")
    object_refs = list(object_refs)
    object_ids = unique_ids_of(object_refs, "wait")
    if not isinstance(num_returns, int) or num_returns < 0:
        raise ValueError(f"num_returns must be a non-negative int, got {num_returns!r}")
    if num_returns > len(object_refs):
        raise ValueError(f"num_returns ({num_returns}) cannot be greater than the number of "
                         f"refs ({len(object_refs)})")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
    if not object_refs:
        return [], []
    return _global_worker().wait(object_refs, num_returns, timeout, bool(fetch_local), object_ids)


# -------------------------------------------------------------- decorators

def remote(*args, **kwargs):
    """``@rayx.remote`` or ``@rayx.remote(num_cpus=..., ...)`` on a function or a class."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @rayx.remote decorator takes either no arguments or only keyword "
                        "arguments, e.g. @rayx.remote(num_cpus=1)")

    def decorator(target):
        return _make_remote(target, kwargs)
    return decorator


def _make_remote(target, options):
    import inspect
    if inspect.isclass(target):
        from rayx.actor import ActorClass
        return ActorClass(target, options)
    if inspect.isfunction(target) or inspect.isbuiltin(target) or callable(target):
        from rayx.remote_function import RemoteFunction
        return RemoteFunction(target, options)
    raise TypeError(f"@rayx.remote expects a function or a class, got {type(target).__name__}")


# ------------------------------------------------------------------ actors

def get_actor(name, namespace=None):
    """The handle of the live actor named ``name`` in ``namespace`` (default: this job's)."""
    from rayx.actor import ActorHandle, name_key
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() expects a non-empty actor name, got {name!r}")
    _global_worker()
    namespace = namespace or _namespace
    entry = _gcs.get("named_actors", name_key(namespace, name))
    if entry is not None:
        info = codec.loads(entry)
        record = _gcs.get("actors", info["actor_id"])
        if record is None or codec.loads(record).get("state") != "DEAD":
            return ActorHandle(info["actor_id"], info["class_name"], info["methods"],
                               info["max_task_retries"], info.get("max_pending_calls", -1))
    raise ValueError(f"Failed to look up actor with name '{name}' in namespace '{namespace}'. "
                     f"This could be because 1. You are trying to look up a named actor you didn't "
                     f"create. 2. The named actor died. 3. You did not use a namespace matching the "
                     f"namespace of the actor.")


def _actor_handle_by_id(actor_id):
    from rayx.actor import ActorHandle
    record = _gcs.get("actors", actor_id)
    if record is None:
        raise ValueError(f"no actor {actor_id.hex()} in the GCS")
    info = codec.loads(record)
    return ActorHandle(actor_id, info["class_name"], info["methods"], info["max_task_retries"])


def kill(actor, *, no_restart=True):
    """Kill an actor at once (its pending calls fail); it restarts only if ``no_restart=False``."""
    from rayx.actor import ActorHandle
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"rayx.kill() only supports actors; got {type(actor).__name__}. "
                         f"Use rayx.cancel() for tasks.")
    _global_worker().request("kill_actor", actor._actor_id, bool(no_restart))


def cancel(object_ref, *, force=False, recursive=True):
    """Cancel the task that makes ``object_ref``: dropped if it has not started,
    interrupted (KeyboardInterrupt inside it) if it runs, its worker killed with
    ``force=True``. ``get`` then raises TaskCancelledError. Cancelled tasks are not
    retried. An actor call is dropped if it has not started; a running call of an
    async actor has its asyncio task cancelled; a running call of another actor
    goes on (``get_runtime_context().is_canceled()`` tells it). ``force=True``
    raises ValueError for actor calls."""
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    _global_worker().cancel_task(object_ref.binary()[:16], bool(force))


def method(*args, **kwargs):
    """``@rayx.method(num_returns=...)`` on an actor method."""
    from rayx.actor import method as actor_method
    return actor_method(*args, **kwargs)


def get_runtime_context():
    """What the calling code runs as: job, task, actor, node, namespace."""
    from rayx.runtime_context import RuntimeContext
    return RuntimeContext(_global_worker(), _namespace)


# ------------------------------------------------------------ cluster info

def nodes():
    """One dict per node of the cluster, as Ray's ``ray.nodes()``."""
    _global_worker()
    result = []
    for node_id, blob in _gcs.scan("nodes").items():
        info = codec.loads(blob)
        alive = info.get("state") == "ALIVE"
        result.append({
            "NodeID": node_id.hex(),
            "Alive": alive,
            "NodeManagerAddress": info.get("node_ip_address"),
            "NodeName": info.get("node_name"),
            "RayletSocketName": info.get("raylet_socket"),
            "ObjectStoreSocketName": info.get("arena_path"),
            "Resources": info.get("resources_total", {}) if alive else {},
            "alive": alive,
        })
    return result


def _node_records():
    _global_worker()
    return [codec.loads(blob) for blob in _gcs.scan("nodes").values()]


def cluster_resources():
    total = {}
    for info in _node_records():
        if info.get("state") == "ALIVE":
            for name, amount in info.get("resources_total", {}).items():
                total[name] = total.get(name, 0) + amount
    return total


def available_resources():
    total = {}
    for info in _node_records():
        if info.get("state") == "ALIVE":
            for name, amount in info.get("resources_available", {}).items():
                if amount > 0:
                    total[name] = total.get(name, 0) + amount
    return total


def get_gpu_ids():
    value = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(x) for x in value.split(",") if x.strip().isdigit()]


# ---------------------------------------------------------------- timeline

def timeline(filename=None):
    """The cluster's task events as a Chrome trace (chrome://tracing, Perfetto): a list
    of events, or, given ``filename``, written there as JSON (and None returned)."""
    from rayx.util import state
    _global_worker()
    events = state.timeline_events(gcs=_gcs)
    if filename is None:
        return events
    import json
    with open(filename, "w") as f:
        json.dump(events, f)
    return None
