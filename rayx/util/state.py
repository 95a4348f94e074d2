"""Cluster state read from the GCS, as in Ray's ``ray.util.state``.

``list_actors()`` scans the GCS ``actors`` table (one record per actor,
written by the raylet that hosts it on every state change) so any process
connected to the cluster can see every actor; the ``rayx list actors`` CLI
command is built on it.
"""
from rayx._core import codec

ACTOR_FIELDS = ("actor_id", "class_name", "state", "name", "namespace", "pid", "restarts",
                "node_id", "job_id", "detached", "death_reason")

_OPS = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _gcs():
    from rayx import api
    api._global_worker()
    return api._gcs


def _hex(value):
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


def _actor_dict(record):
    out = {}
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


def _matches(item, filters):
    for key, op, value in filters or ():
        if op not in _OPS:
            raise ValueError(f"unsupported filter operator {op!r}; use one of {sorted(_OPS)}")
        have = item.get(key)
        if isinstance(have, (int, float)) and isinstance(value, str):
            try:
                value = type(have)(value)
            except ValueError:
                pass
        if not _OPS[op](have, value):
            return False
    return True


def list_actors(filters=None, limit=None, detail=False):
    """One dict per actor in the GCS actors table (actor_id, class_name, state,
    name, namespace, pid, restarts, node_id, ...), sorted by actor id.

    ``filters`` is a list of ``(key, "=" | "!=", value)`` as in Ray.
    ``detail=True`` adds every field of the GCS record (e.g. the method table).
    """
    actors = []
    for _, blob in sorted(_gcs().scan("actors").items()):
        try:
            record = codec.loads(blob)
        except Exception:
            continue
        item = _actor_dict(record)
        if detail:
            for key, value in record.items():
                item.setdefault(key, _hex(value))
        if _matches(item, filters):
            actors.append(item)
            if limit is not None and len(actors) >= limit:
                break
    return actors


def get_actor(actor_id):
    """The state dict of one actor (by hex id), or None."""
    blob = _gcs().get("actors", bytes.fromhex(actor_id) if isinstance(actor_id, str) else actor_id)
    return _actor_dict(codec.loads(blob)) if blob else None
