"""Cluster state read from the GCS, as in Ray's ``ray.util.state``.

Every function reads the GCS tables directly, through their definitions in
``rayx.gcs.tables``, so any process connected to the cluster sees the whole
cluster; the ``rayx list``, ``rayx memory`` and ``rayx timeline`` commands are
built on them (they pass their own GcsClient as ``gcs=``; otherwise the
driver's connection is used, calling ``rayx.init()`` first if needed). A row
that does not decode is left out.

* ``list_actors``: the ``actors`` table (one record per actor, written by the
  raylet that hosts it on every state change).
* ``list_nodes``: the ``nodes`` table (heartbeats); a node whose heartbeat is
  older than ``tables.HEARTBEAT_TIMEOUT_S`` seconds is shown DEAD, as
  ``rayx status`` does.
* ``list_tasks``: the ``tasks`` table (lineage: every task submitted) joined by
  task id with ``task_events`` (written by the worker that ran it, see
  ``rayx.runtime.task_events``). A task with lineage but no event yet is
  PENDING_OR_RUNNING; one that never ran (an input failed, its worker crashed)
  stays so too, as there is no event for it.
* ``list_objects``: the ``objects`` table (where each object was made, its
  size) and ``object_copies`` (nodes that pulled a copy); the creating task's
  name comes from the lineage (the first 16 bytes of an object id are its
  task's id). Rows are not deleted when an object is freed, so this lists every
  object recorded, freed or not.
* ``timeline_events``: task events as a Chrome trace (chrome://tracing, Perfetto).

Rows are ``StateRow`` dicts that also allow attribute access (``t.state``), as
Ray's rows do. Ids are hex strings. ``filters`` are ``(key, op, value)`` with op ``=``/``==``/
``!=``; a string value is converted to the type of the field it is compared
with (so ``("pid", "=", "123")`` works). ``limit`` keeps the first rows after
sorting.
"""
import time

from rayx.runtime import context, task_events
from rayx.runtime.driver import core_worker
from rayx._core import codec
from rayx.gcs import tables

ACTOR_FIELDS = ("actor_id", "class_name", "state", "name", "namespace", "pid", "restarts",
                "node_id", "job_id", "detached", "death_reason")
NODE_FIELDS = ("node_id", "state", "node_ip_address", "is_head", "resources_total",
               "resources_available", "workers", "objects", "pending_tasks", "running_tasks",
               "last_heartbeat")
TASK_FIELDS = ("task_id", "name", "state", "type", "job_id", "actor_id", "node_id", "pid",
               "attempt", "start_time", "end_time", "duration_s", "error_type")
OBJECT_FIELDS = ("object_id", "size", "node_id", "copies", "task_id", "is_put", "creator")

PENDING_OR_RUNNING = "PENDING_OR_RUNNING"
TASK_TYPES = {codec.NORMAL_TASK: "NORMAL_TASK", codec.ACTOR_CREATION_TASK: "ACTOR_CREATION_TASK",
              codec.ACTOR_TASK: "ACTOR_TASK"}
PUT_BIT = 0x80000000

_OPS = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class StateRow(dict):
    """A row of the state API: a dict (JSON, ``row["state"]``) whose keys are also
    attributes (``row.state``), as Ray's state rows allow."""
    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this {type(self).__name__} has no field {name!r} "
                                 f"(fields: {', '.join(self)})") from None

    def __dir__(self):
        return list(super().__dir__()) + list(self)


def _gcs(gcs=None):
    if gcs is not None:
        return gcs
    core_worker()
    return context.gcs()


def _hex(value):
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


def _hex_or_none(value):
    return value.hex() if value else None


def _actor_dict(record):
    out = StateRow()
    for field in ACTOR_FIELDS:
        value = record.get(field)
        if field in ("actor_id", "node_id", "job_id"):
            value = _hex(value) if value else None
        elif field in ("name", "namespace", "death_reason"):
            value = value or ""
        elif field in ("pid", "restarts"):
            value = int(value or 0)
        out[field] = value
    return out


def _coerce(have, value):
    """A filter's string value as the type of the field it is compared with."""
    if not isinstance(value, str):
        return value
    if isinstance(have, bool):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        return value
    if isinstance(have, (int, float)):
        try:
            return type(have)(value)
        except ValueError:
            return value
    if have is None and value.lower() in ("none", "null", ""):
        return None
    return value


def _matches(item, filters):
    for key, op, value in filters or ():
        if op not in _OPS:
            raise ValueError(f"unsupported filter operator {op!r}; use one of {sorted(_OPS)}")
        have = item.get(key)
        if not _OPS[op](have, _coerce(have, value)):
            return False
    return True


def _select(items, filters, limit):
    out = []
    for item in items:
        if _matches(item, filters):
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
    return out


# ------------------------------------------------------------------ actors

def list_actors(filters=None, limit=None, detail=False, gcs=None):
    """One dict per actor in the GCS actors table (actor_id, class_name, state,
    name, namespace, pid, restarts, node_id, ...), sorted by actor id.

    ``filters`` is a list of ``(key, "=" | "!=", value)`` as in Ray.
    ``detail=True`` adds every field of the GCS record (e.g. the method table).
    """
    actors = []
    records = tables.ACTORS.scan(_gcs(gcs))
    for actor_id in sorted(records):
        record = records[actor_id]
        item = _actor_dict(record)
        if detail:
            for key, value in record.items():
                item.setdefault(key, _hex(value))
        if _matches(item, filters):
            actors.append(item)
            if limit is not None and len(actors) >= limit:
                break
    return actors


def get_actor(actor_id, gcs=None):
    """The state dict of one actor (by hex id), or None."""
    record = tables.ACTORS.get(_gcs(gcs), bytes.fromhex(actor_id) if isinstance(actor_id, str) else actor_id)
    return _actor_dict(record) if record is not None else None


def summarize_actors(gcs=None):
    """{class name: {state: count}}."""
    summary = {}
    for actor in list_actors(gcs=gcs):
        states = summary.setdefault(actor["class_name"] or "?", {})
        states[actor["state"]] = states.get(actor["state"], 0) + 1
    return summary


# ------------------------------------------------------------------- nodes

def _node_dict(record, now, detail):
    item = StateRow({
        "node_id": _hex_or_none(record.get("node_id")),
        "state": tables.NODE_ALIVE if tables.is_responsive(record, now) else tables.NODE_DEAD,
        "node_ip_address": record.get("node_ip_address") or "",
        "is_head": bool(record.get("is_head")),
        "resources_total": dict(record.get("resources_total") or {}),
        "resources_available": dict(record.get("resources_available") or {}),
        "workers": int(record.get("workers") or 0),
        "objects": int(record.get("objects") or 0),
        "pending_tasks": int(record.get("pending_tasks") or 0),
        "running_tasks": int(record.get("running_tasks") or 0),
        "last_heartbeat": record.get("heartbeat"),
    })
    if detail:
        for key, value in record.items():
            item.setdefault(key, _hex(value))
    return item


def list_nodes(filters=None, limit=None, detail=False, gcs=None):
    """One dict per node (node_id, state, node_ip_address, is_head, resources,
    load), the head first."""
    now = time.time()
    nodes = [_node_dict(record, now, detail) for record in tables.NODES.scan(_gcs(gcs)).values()]
    nodes.sort(key=lambda n: (not n["is_head"], n["state"] != tables.NODE_ALIVE, n["node_id"] or ""))
    return _select(nodes, filters, limit)


# ------------------------------------------------------------------- tasks

def _scan_events(gcs):
    """{task id: its latest event} over the whole task_events table."""
    return task_events.latest_events(tables.TASK_EVENTS.scan(gcs).values())


def _task_dict(task_id, spec, event, detail):
    if event is not None:
        start, end = event.get("start_time"), event.get("end_time")
        task_type = event.get("task_type", spec.task_type if spec is not None else 0)
        item = StateRow({
            "task_id": task_id.hex(),
            "name": event.get("name") or (spec.function_name if spec is not None else ""),
            "state": event.get("state") or task_events.FINISHED,
            "type": TASK_TYPES.get(task_type, str(task_type)),
            "job_id": _hex_or_none(event.get("job_id")),
            "actor_id": _hex_or_none(event.get("actor_id")),
            "node_id": _hex_or_none(event.get("node_id")),
            "pid": int(event.get("pid") or 0),
            "attempt": int(event.get("attempt") or 0),
            "start_time": start,
            "end_time": end,
            "duration_s": (end - start) if start is not None and end is not None else None,
            "error_type": event.get("error_type") or "",
        })
    else:
        item = StateRow({
            "task_id": task_id.hex(),
            "name": spec.function_name,
            "state": PENDING_OR_RUNNING,
            "type": TASK_TYPES.get(spec.task_type, str(spec.task_type)),
            "job_id": _hex_or_none(spec.job_id),
            "actor_id": _hex_or_none(spec.actor_id),
            "node_id": None,
            "pid": None,
            "attempt": int(spec.attempt),
            "start_time": None,
            "end_time": None,
            "duration_s": None,
            "error_type": "",
        })
    if detail:
        if event is not None:
            item["worker_id"] = _hex_or_none(event.get("worker_id"))
            item["node_ip_address"] = event.get("node_ip_address") or ""
        if spec is not None:
            item.update(parent_task_id=_hex_or_none(spec.parent_task_id),
                        function_id=_hex_or_none(spec.function_id),
                        method_name=spec.method_name, resources=dict(spec.resources),
                        num_returns=int(spec.num_returns), max_retries=int(spec.max_retries))
    return item


def list_tasks(filters=None, limit=None, detail=False, gcs=None):
    """One dict per task submitted or run (task_id, name, state, type, job_id,
    actor_id, node_id, pid, attempt, start_time, end_time, duration_s,
    error_type), in order of start time, tasks not yet seen running last.

    state is FINISHED or FAILED once the worker's event is in the GCS (events
    are batched: they appear within ~0.1 s), else PENDING_OR_RUNNING.
    """
    gcs = _gcs(gcs)
    specs = {task_id: lineage.spec for task_id, lineage in tables.TASKS.scan(gcs).items()}
    events = _scan_events(gcs)
    tasks = [_task_dict(task_id, specs.get(task_id), events.get(task_id), detail)
             for task_id in set(specs) | set(events)]
    tasks.sort(key=lambda t: (t["start_time"] is None, t["start_time"] or 0, t["task_id"]))
    return _select(tasks, filters, limit)


def get_task(task_id, gcs=None):
    """The state dict of one task (by hex id), or None."""
    gcs = _gcs(gcs)
    key = bytes.fromhex(task_id) if isinstance(task_id, str) else task_id
    lineage, event = tables.TASKS.get(gcs, key), _scan_events(gcs).get(key)
    spec = lineage.spec if lineage is not None else None
    if spec is None and event is None:
        return None
    return _task_dict(key, spec, event, detail=True)


def summarize_tasks(gcs=None):
    """{task name: {"type": ..., "state_counts": {state: count}}}, as ``ray summary tasks``."""
    summary = {}
    for task in list_tasks(gcs=gcs):
        entry = summary.setdefault(task["name"], {"type": task["type"], "state_counts": {}})
        counts = entry["state_counts"]
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    return summary


# ----------------------------------------------------------------- objects

def _task_names(gcs, task_ids):
    """{task id: function name} from the lineage of these tasks, or from their task
    events (direct actor calls leave no lineage row)."""
    task_ids = sorted(task_ids)
    names = {}
    for task_id, lineage in zip(task_ids, tables.TASKS.get_many(gcs, task_ids) if task_ids else ()):
        if lineage is not None:
            names[task_id] = lineage.spec.function_name
    if len(names) < len(task_ids):
        events = _scan_events(gcs)
        for task_id in task_ids:
            if task_id not in names and task_id in events:
                names[task_id] = events[task_id]["name"]
    return names


def _object_dicts(gcs):
    objects = {}    # object id -> [node id of the primary copy, size, {node id: size} of copies]
    for object_id, location in tables.OBJECTS.scan(gcs).items():
        objects[object_id] = [location.node_id, location.size, {}]
    for object_id, copies in tables.OBJECT_COPIES.scan(gcs).items():
        entry = objects.setdefault(object_id, [b"", 0, {}])
        entry[2].update(copies)
        if not entry[1]:                        # no primary row: a copy's size
            entry[1] = next((size for size in copies.values() if size), 0)
    names = _task_names(gcs, {object_id[:16] for object_id in objects})
    items = []
    for object_id, (node_id, size, copies) in objects.items():
        is_put = len(object_id) == 20 and bool(int.from_bytes(object_id[16:20], "little") & PUT_BIT)
        task_name = names.get(object_id[:16], "")
        items.append(StateRow({
            "object_id": object_id.hex(),
            "size": size,
            "node_id": _hex_or_none(node_id),
            "copies": sorted(n.hex() for n in copies if n != node_id),
            "task_id": object_id[:16].hex(),
            "is_put": is_put,
            "creator": "(put)" if is_put else (task_name or "?"),
            "task_name": task_name,
        }))
    items.sort(key=lambda o: o["object_id"])
    return items


def list_objects(filters=None, limit=None, detail=False, gcs=None):
    """One dict per object in the GCS object table (object_id, size in bytes,
    node_id where it was made, copies = other nodes holding a pulled copy,
    task_id of its creator, is_put, creator = the creating task's function name
    or "(put)"), sorted by object id."""
    items = _object_dicts(_gcs(gcs))
    if not detail:
        for item in items:
            del item["task_name"]
    return _select(items, filters, limit)


def summarize_objects(gcs=None, objects=None):
    """{"total_objects", "total_bytes", "per_node": {node id: {"objects", "bytes"}}}:
    a copy counts on every node that holds it."""
    if objects is None:
        objects = list_objects(gcs=gcs)
    per_node = {}
    total = 0
    for obj in objects:
        total += obj["size"]
        for node_id in [obj["node_id"]] + list(obj["copies"]):
            if node_id is None:
                continue
            entry = per_node.setdefault(node_id, {"objects": 0, "bytes": 0})
            entry["objects"] += 1
            entry["bytes"] += obj["size"]
    return {"total_objects": len(objects), "total_bytes": total, "per_node": per_node}


# ---------------------------------------------------------------- timeline

def timeline_events(gcs=None):
    """The task events as a Chrome trace: a list of complete ("ph": "X") events,
    ts and dur in microseconds, pid = the node (its IP address when every node has
    its own, else its id), tid = the worker's pid."""
    events = _scan_events(_gcs(gcs))
    ips = {}
    for event in events.values():
        ips.setdefault(event.get("node_id") or b"", event.get("node_ip_address") or "")
    distinct_ips = len(set(ips.values())) == len(ips) and all(ips.values())
    trace = []
    for task_id, event in events.items():
        start, end = event.get("start_time"), event.get("end_time")
        if start is None or end is None:
            continue
        node_id = event.get("node_id") or b""
        task_type = event.get("task_type", 0)
        state = event.get("state") or task_events.FINISHED
        item = {
            "name": event.get("name") or "?",
            "cat": TASK_TYPES.get(task_type, "task").lower(),
            "ph": "X",
            "ts": start * 1e6,
            "dur": max(0.0, (end - start) * 1e6),
            "pid": ips[node_id] if distinct_ips else node_id.hex(),
            "tid": int(event.get("pid") or 0),
            "args": {
                "task_id": task_id.hex(),
                "job_id": _hex_or_none(event.get("job_id")),
                "actor_id": _hex_or_none(event.get("actor_id")),
                "node_id": node_id.hex(),
                "worker_id": _hex_or_none(event.get("worker_id")),
                "attempt": int(event.get("attempt") or 0),
                "state": state,
            },
        }
        if state == task_events.FAILED:
            item["args"]["error_type"] = event.get("error_type") or ""
            item["cname"] = "terrible"
        trace.append(item)
    trace.sort(key=lambda e: (e["ts"], e["args"]["task_id"]))
    return trace
