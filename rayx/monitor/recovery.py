"""What the cluster does, once, when a node dies (the monitor calls
``Recovery.node_died`` after marking the node dead).

* The copies it held go from the GCS ``object_copies`` (``tables.forget_node_copies``),
  so no pull is sent there; the objects made there keep their ``objects`` row,
  which now names a dead node: whoever needs such an object and finds no other
  copy rebuilds it from lineage (``rayx.raylet.reconstruction``).
* Each actor it hosted restarts elsewhere while its ``max_restarts`` allows:
  its creation task (from the lineage in the GCS) is submitted again on the
  head, which places it like any task, with the restart counted in the spec's
  attempt; callers find the new incarnation in the ``actors`` table. An actor
  with no restarts left is marked dead with the node's death as its reason,
  and its name is freed.

The tasks of the dead node are the business of the nodes that forwarded them
(``rayx.raylet.failures``), which know which ones they are.
"""
import logging

from rayx.gcs import tables

logger = logging.getLogger("rayx.monitor")


class Recovery:
    def __init__(self, gcs, resubmit):
        self._gcs = gcs
        self._resubmit = resubmit       # resubmit(creation spec): thread-safe, on the head raylet

    def node_died(self, node_id, record):
        """Runs in a thread of the head raylet's executor."""
        gcs = self._gcs
        where = f"node {node_id.hex()[:12]} ({record.get('node_ip_address')}) died"
        for actor_id, actor in tables.ACTORS.scan(gcs).items():
            if actor.get("node_id") == node_id and actor.get("state") != tables.ACTOR_DEAD:
                try:
                    self._recover_actor(actor_id, actor, where)
                except Exception:
                    logger.exception("recovering actor %s", actor_id.hex())
        removed = tables.forget_node_copies(gcs, node_id)
        logger.info("%s: %d object copies forgotten", where, removed)

    def _recover_actor(self, actor_id, actor, where):
        lineage = None
        if actor.get("creation_task_id"):
            lineage = tables.TASKS.get(self._gcs, actor["creation_task_id"])
        restarts = int(actor.get("restarts") or 0)
        if lineage is not None:
            spec = lineage.spec
            limit = spec.max_restarts
            if limit < 0 or restarts < limit:
                spec.attempt = restarts + 1
                actor = dict(actor, state=tables.ACTOR_RESTARTING, restarts=restarts + 1, pid=0,
                             death_reason="")
                self._write(actor_id, actor)
                logger.info("restarting actor %s (%s): %s", actor.get("class_name"), actor_id.hex()[:12],
                            where)
                self._resubmit(spec)
                return
        reason = f"the {where}" + ("" if lineage is not None else " (and its creation is not in the lineage)")
        self._write(actor_id, dict(actor, state=tables.ACTOR_DEAD, death_reason=reason, pid=0))
        if actor.get("name"):
            key = tables.named_actor_key(actor.get("namespace", ""), actor["name"])
            entry = tables.NAMED_ACTORS.get(self._gcs, key)
            if entry and entry.get("actor_id") == actor_id:
                tables.NAMED_ACTORS.delete(self._gcs, key)

    def _write(self, actor_id, record):
        tables.ACTORS.put(self._gcs, actor_id, record)
        self._gcs.publish(tables.ACTOR_STATE_CHANNEL, tables.ACTORS.encode(record))
