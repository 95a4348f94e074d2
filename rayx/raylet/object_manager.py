"""Moving objects between nodes: serving pulls, and pulling what local tasks and
clients wait for.

A pull looks for copies of the object (nodes known to hold it, then the GCS
``object_locations`` table, polled with backoff until the object exists
somewhere), streams it from one of them in chunks straight into this node's
arena (or, for small objects, into memory), seals it, and records the new
location. One pull per object at a time, however many tasks need it.
"""
import asyncio
import logging

import grpc

from rayx.exceptions import ObjectExistsError, ObjectStoreFullError
from rayx.protos import rayx_pb2
from rayx.raylet.objects import READY

logger = logging.getLogger("rayx.raylet")

CHUNK_SIZE = 8 << 20
PULL_TIMEOUT = 600.0


def object_locations(gcs, object_id):
    """{node id: size} of the nodes holding the object, from the GCS object table."""
    locations = {}
    primary = gcs.get("objects", object_id)
    if primary:
        locations[bytes(primary[:16])] = int(primary[16:] or 0)
    for node, size in gcs.hgetall("object_copies", object_id).items():
        locations[bytes(node)] = int(size)
    return locations


class ObjectManager:
    def __init__(self, raylet):
        self.raylet = raylet
        self.active = {}          # object id -> asyncio task pulling it
        self.bytes_pulled = 0
        self.pulls = 0

    def want(self, object_id):
        """Make sure the object becomes local (no-op if a pull is on its way)."""
        if object_id in self.active:
            return
        self.active[object_id] = self.raylet.loop.create_task(self._fetch(object_id))

    async def _fetch(self, object_id):
        raylet = self.raylet
        delay = 0.005
        try:
            while True:
                entry = raylet.objects.get(object_id)
                if entry is None or entry.state == READY:
                    return
                sources = list(entry.remote_locations or ())
                if not sources:
                    sources = await self._gcs_locations(object_id)
                sources = [s for s in sources if s != raylet.node_id]
                if any(s not in raylet.peers.nodes for s in sources):
                    await raylet._refresh_peers()     # a node that joined after our last look
                sources = [s for s in sources if s in raylet.peers.nodes]
                for source in sources:
                    if await self._pull(source, object_id):
                        return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        except Exception:
            logger.exception("fetching object %s", object_id.hex())
        finally:
            self.active.pop(object_id, None)

    async def _gcs_locations(self, object_id):
        loop = self.raylet.loop
        try:
            locations = await loop.run_in_executor(None, object_locations, self.raylet.gcs, object_id)
        except Exception:
            return []
        return list(locations)

    async def _pull(self, source, object_id):
        raylet = self.raylet
        stub = raylet.peers.node_stub(source)
        if stub is None:
            return False
        arena = raylet.arena
        view = None
        parts = []
        header = None
        position = 0
        try:
            call = stub.PullObject(rayx_pb2.PullObjectRequest(object_id=object_id, to_node_id=raylet.node_id),
                                   metadata=raylet.peers.metadata, timeout=PULL_TIMEOUT)
            async for chunk in call:
                if header is None:
                    header = chunk
                    if not chunk.found:
                        return False
                    if not chunk.inline:
                        try:
                            view = arena.create_object(object_id, chunk.total_size)
                        except ObjectExistsError:
                            if arena.contains(object_id):
                                call.cancel()
                                raylet.object_arrived(object_id, None, chunk.total_size,
                                                      list(chunk.nested_refs), chunk.is_error)
                                return True
                            raise
                data = chunk.data
                if view is None:
                    parts.append(data)
                else:
                    view[position:position + len(data)] = data
                    position += len(data)
        except (grpc.aio.AioRpcError, ObjectStoreFullError) as exc:
            logger.warning("pulling %s from %s failed: %s", object_id.hex()[:16], source.hex()[:12], exc)
            if view is not None:
                del view
                arena.abort(object_id)
            return False
        if header is None:
            return False
        if view is not None:
            del view
            arena.seal(object_id)
            data = None
        else:
            data = b"".join(parts)
        self.pulls += 1
        self.bytes_pulled += header.total_size
        raylet.object_arrived(object_id, data, header.total_size, list(header.nested_refs), header.is_error)
        return True

    async def serve_pull(self, object_id):
        """Chunks of a local object for PullObject."""
        raylet = self.raylet
        entry = raylet.objects.get(object_id)
        if entry is None or entry.state != READY:
            yield rayx_pb2.ObjectChunk(found=False)
            return
        if not entry.in_arena:
            yield rayx_pb2.ObjectChunk(found=True, inline=True, total_size=entry.size, data=entry.data,
                                       is_error=entry.is_error, nested_refs=list(entry.nested))
            return
        raylet.ensure_in_arena(entry)
        buffer = raylet.arena.get(object_id)
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
