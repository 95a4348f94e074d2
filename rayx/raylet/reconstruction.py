"""Lineage reconstruction: rebuilding an object whose every copy is gone by
running again the task that made it, from its lineage in the GCS.

The object manager asks here when it finds no copy of an object it pulls for
someone on this node (``ObjectManager._fetch``). An object is lost when its
``objects`` row names a node that is dead or no longer has it and no copy
answers, or, for an object never made, when the node that recorded its task
(the lineage row's node, which answers for the task until it finishes) is
dead. Then:

* an object made by ``put`` cannot be rebuilt: it fails with ``OwnerDiedError``
  (its node died, and the process that put it with it) or ``ObjectLostError``,
  naming the object and where it was;
* an object made by an actor call, or whose lineage is not in the GCS, fails
  with ``ObjectReconstructionFailedError``;
* otherwise the task runs again, here (or wherever this node's router places
  it), within its ``max_retries`` budget (``TaskSpec.take_retry``, the budget
  worker deaths use too; then ``ObjectReconstructionFailedMaxAttemptsExceededError``).
  Its spec goes back to the lineage row with this node as the one answering
  for it, and its inputs are fetched, or rebuilt, as any task's are, so
  reconstruction recurses through lost inputs. Ids are deterministic, so the
  results land under the same ids and the waiting pull finds them.

This works whoever made the object and whether they are still alive: only the
GCS is read. Many getters cause one re-execution: a node claims the task in
the GCS ``reconstructions`` table (one row per lost copy: the task id and the
node whose loss it answers), and others wait for the new copy unless the
claimant is dead or its claim older than ``CLAIM_STALE_S``.
"""
import logging
import time

from rayx._core import codec
from rayx.exceptions import (ObjectLostError, ObjectReconstructionFailedError,
                             ObjectReconstructionFailedMaxAttemptsExceededError, OwnerDiedError)
from rayx.gcs import tables

logger = logging.getLogger("rayx.raylet")

CLAIM_STALE_S = 120.0
PUT_BIT = 0x80          # in the last byte of an object id: made by put


def is_put(object_id):
    return bool(object_id[-1] & PUT_BIT)


class Reconstruction:
    def __init__(self, loop, node_id, gcs, peers, submit):
        self._loop = loop
        self._node_id = node_id
        self._gcs = gcs
        self._peers = peers
        self._submit = submit           # LocalScheduler.submit
        self._claimed = set()           # claim keys this node took
        self.reconstructions = 0        # tasks this node ran again

    async def dead_answering_node(self, object_id):
        """No node holds the object and none made it yet: the node that answers for
        its task if that node is dead (then the object is lost), else None."""
        if not self._peers.dead:
            return None
        lineage = await self._read(tables.TASKS, object_id[:16])
        if lineage is not None and self._peers.is_dead(lineage.node_id):
            return lineage.node_id
        return None

    async def lost(self, object_id, made_on):
        """Every copy of the object is gone (``made_on``: the node its ``objects`` row
        names, or the dead node that answered for its task). Returns the error it
        fails with, or None when it is being rebuilt (here or by another node)."""
        peers = self._peers
        where = peers.describe(made_on)
        if is_put(object_id):
            kind = OwnerDiedError if peers.is_dead(made_on) else ObjectLostError
            return kind(object_id.hex(), f"Object {object_id.hex()} was made by put() on {where}, and "
                        f"every copy of it is gone; objects made by put() cannot be rebuilt from lineage")
        task_id = object_id[:16]
        lineage = await self._read(tables.TASKS, task_id)
        if lineage is None:
            return ObjectReconstructionFailedError(object_id.hex(), (
                f"Object {object_id.hex()} (made on {where}) is lost, and the task that made it is not "
                f"in the lineage, so it cannot be rebuilt"))
        spec = lineage.spec
        if spec.task_type != codec.NORMAL_TASK:
            return ObjectReconstructionFailedError(object_id.hex(), (
                f"Object {object_id.hex()}, a result of {spec.function_name} (made on {where}), is lost; "
                f"results of actor calls cannot be rebuilt from lineage"))
        key = task_id + made_on
        if key in self._claimed or not await self._claim(key):
            return None
        if not spec.take_retry():
            return ObjectReconstructionFailedMaxAttemptsExceededError(object_id.hex(), (
                f"Object {object_id.hex()}, a result of {spec.function_name} (made on {where}), is lost, "
                f"and running the task again is not allowed: it ran {spec.attempt} time(s) "
                f"(max_retries={spec.max_retries})"))
        await self._loop.run_in_executor(None, tables.TASKS.put, self._gcs, task_id,
                                         tables.Lineage(self._node_id, spec))
        self.reconstructions += 1
        logger.info("reconstructing %s: running %s (task %s) again, attempt %d; its copy on %s is gone",
                    object_id.hex()[:16], spec.function_name, task_id.hex()[:16], spec.attempt, where)
        self._submit(spec)
        return None

    async def _claim(self, key):
        """Take the claim to rebuild: True if it is ours now."""
        claim = {"node_id": self._node_id, "time": time.time()}
        gcs = self._gcs
        if await self._loop.run_in_executor(None, tables.RECONSTRUCTIONS.put_if_absent, gcs, key, claim):
            self._claimed.add(key)
            return True
        held = await self._read(tables.RECONSTRUCTIONS, key)
        if held is not None and held.get("node_id") in self._peers.nodes \
                and time.time() - held.get("time", 0) < CLAIM_STALE_S:
            return False                 # another live node is on it: wait for its copy
        await self._loop.run_in_executor(None, tables.RECONSTRUCTIONS.put, gcs, key, claim)
        self._claimed.add(key)
        return True

    async def _read(self, table, key):
        try:
            return await self._loop.run_in_executor(None, table.get, self._gcs, key)
        except Exception:
            logger.exception("reading %s", table)
            return None
