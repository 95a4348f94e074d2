"""Where a task should run, given the cluster as the GCS last saw it.

Pure functions over node records (from raylet heartbeats) and the locations
of the task's inputs, so the policy can be tested without a cluster and the
global scheduler holding it stays stateless.

DEFAULT picks, among the nodes whose total resources fit the request, the one
with the lowest estimated wait: its queued work (tasks queued or running
beyond its CPUs, times its average task duration) plus the time to move the
task's inputs that it does not hold (bytes / bandwidth), with a penalty when
the request does not fit its available resources right now. SPREAD spreads by
a hash of the task id over the nodes that fit now. Node affinity pins the
task to a node (hard), or prefers it while it fits (soft).
"""
import zlib

from rayx._core import codec

TRANSFER_BANDWIDTH = 1e9       # bytes per second assumed for moving inputs
DEFAULT_TASK_SECONDS = 0.001   # when a node has not measured its tasks yet


class Placement:
    __slots__ = ("node_id", "infeasible")

    def __init__(self, node_id, infeasible=False):
        self.node_id = node_id
        self.infeasible = infeasible


def fits(resources, request):
    for name, amount in request.items():
        if resources.get(name, 0) + 1e-9 < amount:
            return False
    return True


def estimated_wait(node, extra_queued, input_bytes_missing):
    cpus = max(node.get("resources_total", {}).get("CPU", 0), 1.0)
    queued = node.get("pending_tasks", 0) + extra_queued
    task_seconds = node.get("avg_task_seconds") or DEFAULT_TASK_SECONDS
    return queued / cpus * task_seconds + input_bytes_missing / TRANSFER_BANDWIDTH


def choose_node(spec, nodes, input_locations, extra_queued=None):
    """A Placement for ``spec`` among live ``nodes`` (heartbeat records).

    ``input_locations`` maps each input object id to {node id: size};
    ``extra_queued`` maps node ids to tasks placed there since their last
    heartbeat (so a burst does not all land on one node).
    """
    extra_queued = extra_queued or {}
    request = spec.resources
    feasible = [n for n in nodes if fits(n.get("resources_total", {}), request)]
    if spec.strategy == codec.STRATEGY_NODE_AFFINITY:
        target = [n for n in feasible if n["node_id"] == spec.strategy_node_id]
        if target:
            return Placement(target[0]["node_id"])
        if not spec.strategy_soft:
            return Placement(b"", infeasible=True)
    if not feasible:
        return Placement(b"", infeasible=True)
    fit_now = [n for n in feasible
               if fits(n.get("resources_available", {}), request)
               and n.get("pending_tasks", 0) + extra_queued.get(n["node_id"], 0) == 0]
    if spec.strategy == codec.STRATEGY_SPREAD:
        pool = sorted(fit_now or feasible, key=lambda n: n["node_id"])
        return Placement(pool[zlib.crc32(spec.task_id) % len(pool)]["node_id"])
    total_input = {}
    for locations in input_locations.values():
        size = max(locations.values()) if locations else 0
        for node_id in locations:
            total_input[node_id] = total_input.get(node_id, 0) + size
    all_input = sum(max(loc.values()) if loc else 0 for loc in input_locations.values())

    def score(node):
        missing = all_input - total_input.get(node["node_id"], 0)
        wait = estimated_wait(node, extra_queued.get(node["node_id"], 0), missing)
        if node not in fit_now:
            wait += node.get("avg_task_seconds") or DEFAULT_TASK_SECONDS
        return (wait, node["node_id"])

    return Placement(min(feasible, key=score)["node_id"])
