"""This process's runtime state, in one place: its core worker, its GCS client,
the namespace its code runs in, its session directory, and the node it
started (a driver that called ``rayx.init()`` without a cluster).

Every module that needs the process's runtime reads it here, through these
functions; only ``rayx.runtime.driver`` (a driver joining or leaving a
cluster), ``rayx.runtime.worker`` (a worker process starting) and the executor
(a worker running a task of another job sets that job's namespace) change it.
This module imports nothing of rayx, so anything may import it without a cycle.
"""

_core = None          # this process's CoreWorker
_gcs = None           # its GcsClient
_namespace = None     # the namespace names resolve in (named actors, get_actor)
_session_dir = None
_node = None          # the Node this driver started, if any


def core_worker():
    """This process's CoreWorker, or None when it is not connected."""
    return _core


def gcs():
    return _gcs


def namespace():
    return _namespace


def session_dir():
    return _session_dir


def started_node():
    """The Node this driver started (and stops when it disconnects), or None."""
    return _node


def set_namespace(namespace):
    global _namespace
    _namespace = namespace


def connect(core, gcs, session_dir, namespace=None, node=None):
    """This process now runs with ``core`` (connected to the raylet) and ``gcs``."""
    global _core, _gcs, _session_dir, _namespace, _node
    _core, _gcs, _session_dir, _namespace, _node = core, gcs, session_dir, namespace, node


def disconnect():
    """Forget the runtime state; (core worker, GCS client, started node) to close."""
    global _core, _gcs, _session_dir, _node
    state = (_core, _gcs, _node)
    _core = _gcs = _session_dir = _node = None
    return state
