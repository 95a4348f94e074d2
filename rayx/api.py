"""The public functions of rayx: init, shutdown, remote, get, put, wait, and the
cluster-information calls. They work the same in a driver and inside tasks.

This module checks what the user passes and hands it to the process's runtime
(``rayx.runtime``): one CoreWorker per process, connected to the raylet of its
node. ``init()`` without an address (nor RAYX_ADDRESS / RAY_ADDRESS) joins the
cluster ``rayx start`` runs on this machine, if any, and otherwise starts a node
that dies with the driver (GCS shards, a raylet and its workers);
``init(address="local")`` always starts one (``rayx.runtime.driver``). Any call
made before ``init()`` connects as ``init()`` would, as in Ray.
"""
import atexit
import inspect
import os

from rayx import options as opts
from rayx.actor import ActorClass, ActorHandle, named_actor
from rayx.actor import method as actor_method
from rayx.gcs import tables
from rayx._core.objectref import unique_ids_of
from rayx.object_ref import ObjectRef
from rayx.remote_function import RemoteFunction
from rayx.runtime import context, driver
from rayx.runtime.driver import core_worker as _core_worker
from rayx.runtime_context import RuntimeContext


def is_initialized():
    return context.core_worker() is not None


def init(address=None, *, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
         namespace=None, ignore_reinit_error=False, log_to_driver=True, runtime_env=None,
         include_dashboard=None, logging_level=None, _node_ip_address="127.0.0.1",
         _redis_password=None, **kwargs):
    """Connect to a running cluster (``address="auto"``, "host:port", or found as
    ``rayx.runtime.driver.resolve_address`` says), or start a local node
    (``address="local"``, or none found)."""
    with driver.LOCK:
        if context.core_worker() is not None:
            if ignore_reinit_error:
                return RayContext()
            raise RuntimeError("Maybe you called rayx.init twice by accident? This error can be "
                               "suppressed by passing in 'ignore_reinit_error=True' or by calling "
                               "'rayx.shutdown()' prior to 'rayx.init()'.")
        unknown = set(kwargs) - {"configure_logging", "local_mode", "dashboard_host", "dashboard_port",
                                 "_system_config", "_temp_dir", "job_config", "storage", "labels"}
        if unknown:
            raise TypeError(f"init() got unexpected keyword argument(s) {sorted(unknown)}")
        opts.check_runtime_env(runtime_env, "rayx.init()")
        opts.check_runtime_env(getattr(kwargs.get("job_config"), "runtime_env", None), "the job_config")
        driver.connect(address, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                       object_store_memory=object_store_memory, namespace=namespace,
                       node_ip_address=_node_ip_address, redis_password=_redis_password)
        return RayContext()


def shutdown():
    """Disconnect from the cluster and stop the processes ``init()`` started."""
    driver.disconnect()


atexit.register(shutdown)


class RayContext(dict):
    """What ``init`` returns: the addresses of the cluster, also usable as a context manager."""

    def __init__(self):
        gcs = context.gcs()
        super().__init__(address_info={"node_id": context.core_worker().node_id.hex(),
                                       "session_dir": context.session_dir(),
                                       "gcs_address": gcs.address if gcs else None})
        self.address_info = self["address_info"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()


# ------------------------------------------------------------------ objects

def get(object_refs, *, timeout=None):
    """The value of an ObjectRef, or the values of a list of them (raising the task's error)."""
    worker = _core_worker()
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
    return _core_worker().put(value)


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
    return _core_worker().wait(object_refs, num_returns, timeout, bool(fetch_local), object_ids)


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
    if inspect.isclass(target):
        return ActorClass(target, options)
    if inspect.isfunction(target) or inspect.isbuiltin(target) or callable(target):
        return RemoteFunction(target, options)
    raise TypeError(f"@rayx.remote expects a function or a class, got {type(target).__name__}")


# ------------------------------------------------------------------ actors

def get_actor(name, namespace=None):
    """The handle of the live actor named ``name`` in ``namespace`` (default: this job's)."""
    return named_actor(name, namespace)


def kill(actor, *, no_restart=True):
    """Kill an actor at once (its pending calls fail); it restarts only if ``no_restart=False``."""
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"rayx.kill() only supports actors; got {type(actor).__name__}. "
                         f"Use rayx.cancel() for tasks.")
    _core_worker().request("kill_actor", actor._actor_id, bool(no_restart))


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
    _core_worker().cancel_task(object_ref.binary()[:16], bool(force))


def method(*args, **kwargs):
    """``@rayx.method(num_returns=...)`` on an actor method."""
    return actor_method(*args, **kwargs)


def get_runtime_context():
    """What the calling code runs as: job, task, actor, node, namespace."""
    return RuntimeContext(_core_worker(), context.namespace())


# ------------------------------------------------------------ cluster info

def _gcs():
    _core_worker()
    return context.gcs()


def nodes():
    """One dict per node of the cluster, as Ray's ``ray.nodes()``."""
    result = []
    for node_id, info in tables.NODES.scan(_gcs()).items():
        alive = tables.is_alive(info)
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


def cluster_resources():
    total = {}
    for info in tables.alive_nodes(_gcs()).values():
        for name, amount in info.get("resources_total", {}).items():
            total[name] = total.get(name, 0) + amount
    return total


def available_resources():
    total = {}
    for info in tables.alive_nodes(_gcs()).values():
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
    from rayx.util.state import timeline_events
    events = timeline_events(gcs=_gcs())
    if filename is None:
        return events
    import json
    with open(filename, "w") as f:
        json.dump(events, f)
    return None
