"""rayx: a distributed execution framework for Python with Ray Core's API.

This module only re-exports the public API; importing it starts nothing.
"""
from rayx import exceptions
from rayx import actor, util
from rayx.actor import ActorHandle
from rayx.api import (available_resources, cancel, cluster_resources, get, get_actor, get_gpu_ids,
                      get_runtime_context, init, is_initialized, kill, method, nodes, put, remote,
                      shutdown, timeline, wait)
from rayx.object_ref import ObjectRef

__version__ = "0.1.0"

__all__ = [
    "ActorHandle", "ObjectRef", "actor", "cancel", "get_actor", "get_runtime_context", "kill", "method", "util", "available_resources", "cluster_resources", "exceptions", "get", "get_gpu_ids",
    "init", "is_initialized", "nodes", "put", "remote", "shutdown", "timeline", "wait",
]
