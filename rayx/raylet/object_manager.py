"""Moving objects between nodes: serving pulls, pulling what local tasks and
clients wait for, and releasing the copies this node keeps for their owners.

A pull looks for copies of the object (nodes known to hold it, then the GCS
``objects`` and ``object_copies`` tables, polled with backoff until the object
exists somewhere), streams it from one of them in chunks straight into this
node's arena (or, for small objects, into memory), seals it, and records the
new copy in ``object_copies``. One pull per object at a time, however many
tasks need it. When no node can send it (every source is dead or answers that
it does not have it), the object may be lost: ``rayx.raylet.reconstruction``
decides, and either the task that made it runs again (the pull goes on and
finds the new copy) or the object becomes the error saying why it is gone.
A pull never waits on a dead node.
"""
import asyncio
import logging

import grpc

from rayx.exceptions import ObjectExistsError, ObjectStoreFullError
from rayx.runtime import serialization
from rayx.gcs import tables
from rayx.protos import rayx_pb2
from rayx.raylet.objects import READY

logger = logging.getLogger("rayx.raylet")

CHUNK_SIZE = 8 << 20
PULL_TIMEOUT = 600.0
# What a pull from one source came to.
PULLED = "pulled"
ABSENT = "absent"        # the source answered that it does not have the object
FAILED = "failed"        # the transfer broke (the source, the network, or room here)


class ObjectManager:
    def __init__(self, loop, node_id, arena, objects, peers, spiller, gcs, gcs_writer):
        self.loop = loop
        self.node_id = node_id
        self.arena = arena
        self.objects = objects
        self.peers = peers
        self.spiller = spiller
        self.gcs = gcs
        self.gcs_writer = gcs_writer
        self.reconstruction = None  # Reconstruction (built after us; None without a GCS)
        self.active = {}          # object id -> asyncio task pulling it
        self.stopping = False     # set when the raylet stops: its pulls may be cancelled then
        self.bytes_pulled = 0
        self.pulls = 0

    def connect(self, reconstruction):
        """The Reconstruction (it submits tasks, so it is built after us)."""
        self.reconstruction = reconstruction

    def want(self, object_id):
        """Make sure the object becomes local (no-op if a pull is on its way)."""
        if object_id in self.active:
            return
        self.active[object_id] = self.loop.create_task(self._fetch(object_id))

    def release_owner_pins(self, owner, object_ids):
        """FreeObjects: the node that owns these objects freed them; drop the copies
        (and what they refer to) kept here for it."""
        self.objects.release_for(owner, object_ids)

    async def _fetch(self, object_id):
        peers = self.peers
        delay = 0.005
        try:
            while True:
                entry = self.objects.get(object_id)
                if entry is None or entry.state == READY:
                    return
                sources = [s for s in entry.remote_locations if not peers.is_dead(s)]
                made_on = None
                if not sources:
                    made_on, copies = await self._gcs_locations(object_id)
                    sources = ([made_on] if made_on is not None else []) + list(copies)
                sources = [s for s in sources if s != self.node_id]
                if any(s not in peers.nodes and not peers.is_dead(s) for s in sources):
                    await peers.refresh()     # a node that joined after our last look
                answers = set()
                for source in sources:
                    if source in peers.nodes:
                        answer = await self._pull(source, object_id)
                        if answer is PULLED:
                            return
                        if answer is ABSENT:
                            entry.remote_locations.discard(source)   # a stale hint: ask the GCS next
                        answers.add(answer)
                if self.reconstruction is not None and FAILED not in answers and not entry.remote_locations:
                    # Nobody could send it (and no pull merely failed): is it lost?
                    if made_on is None:
                        made_on = entry.lost_on or await self.reconstruction.dead_answering_node(object_id)
                    if made_on is not None:
                        error = await self.reconstruction.lost(object_id, made_on)
                        if error is not None:
                            self._fail(object_id, error)
                            return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        except Exception:
            logger.exception("fetching object %s", object_id.hex())
        finally:
            self.active.pop(object_id, None)

    def _fail(self, object_id, error):
        logger.warning("%s", error)
        data = serialization.serialize_error(error).to_bytes()
        self.objects.mark_ready(object_id, data, len(data), (), True)

    async def _gcs_locations(self, object_id):
        """(node id its ``objects`` row names or None, {node id: size} of its copies)."""
        gcs = self.gcs

        def read():
            return tables.OBJECTS.get(gcs, object_id), tables.OBJECT_COPIES.get(gcs, object_id)

        try:
            primary, copies = await self.loop.run_in_executor(None, read)
        except Exception:
            logger.exception("reading the locations of %s", object_id.hex())
            return None, {}
        return (primary.node_id if primary is not None else None), copies

    async def _pull(self, source, object_id):
        """PULLED, ABSENT (the source does not have it) or FAILED (the transfer broke)."""
        stub = self.peers.node_stub(source)
        if stub is None:
            return FAILED
        arena = self.arena
        view = None
        parts = []
        header = None
        position = 0
        try:
            call = stub.PullObject(rayx_pb2.PullObjectRequest(object_id=object_id, to_node_id=self.node_id),
                                   metadata=self.peers.metadata, timeout=PULL_TIMEOUT)
            async for chunk in call:
                if header is None:
                    header = chunk
                    if not chunk.found:
                        return ABSENT
                    if not chunk.inline:
                        try:
                            view = arena.create_object(object_id, chunk.total_size)
                        except ObjectExistsError:
                            if arena.contains(object_id):
                                call.cancel()
                                self._arrived(object_id, None, chunk.total_size,
                                              list(chunk.nested_refs), chunk.is_error)
                                return PULLED
                            raise
                data = chunk.data
                if view is None:
                    parts.append(data)
                else:
                    view[position:position + len(data)] = data
                    position += len(data)
        except (grpc.aio.AioRpcError, ObjectStoreFullError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and self.stopping:
                raise
            # (A CancelledError otherwise: the call's channel was closed under it, the
            # source having died; the fetch goes on with the other sources, or rebuilds.)
            why = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
            logger.warning("pulling %s from %s failed: %s", object_id.hex()[:16], source.hex()[:12], why)
            if view is not None:
                del view
                arena.abort(object_id)
            return FAILED
        if header is None:
            return FAILED
        if view is not None:
            del view
            arena.seal(object_id)
            data = None
        else:
            data = b"".join(parts)
        self.pulls += 1
        self.bytes_pulled += header.total_size
        self._arrived(object_id, data, header.total_size, list(header.nested_refs), header.is_error)
        return PULLED

    def _arrived(self, object_id, data, size, nested, is_error):
        """A pull finished: the object is local now, and this node holds a copy."""
        self.objects.mark_ready(object_id, data, size, nested, is_error)
        if self.gcs_writer is not None:
            tables.OBJECT_COPIES.add(self.gcs_writer, object_id, self.node_id, size)

    async def serve_pull(self, object_id):
        """Chunks of a local object for PullObject."""
        entry = self.objects.get(object_id)
        if entry is None or entry.state != READY:
            yield rayx_pb2.ObjectChunk(found=False)
            return
        if not entry.in_arena:
            yield rayx_pb2.ObjectChunk(found=True, inline=True, total_size=entry.size, data=entry.data,
                                       is_error=entry.is_error, nested_refs=list(entry.nested))
            return
        if entry.spilled:
            self.spiller.restore(entry)
        buffer = self.arena.get(object_id)
        if buffer is None:
            yield rayx_pb2.ObjectChunk(found=False)
            return
        view = memoryview(buffer)
        try:
            size = len(view)
            first = True
            for offset in range(0, max(size, 1), CHUNK_SIZE):
                data = bytes(view[offset:offset + CHUNK_SIZE])
                if first:
                    first = False
                    yield rayx_pb2.ObjectChunk(found=True, total_size=size, data=data,
                                               is_error=entry.is_error, nested_refs=list(entry.nested))
                else:
                    yield rayx_pb2.ObjectChunk(data=data)
        finally:
            view.release()
            del buffer
