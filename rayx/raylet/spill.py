"""Spilling objects from a full arena to disk, and restoring them on demand.

When a client cannot fit an object even after unreferenced objects were
freed, the raylet writes the least recently used unpinned objects (that are
still referenced) to files in the session's ``spill`` directory and deletes
them from the arena. Before it hands a spilled object to anyone (a get, a
task's argument, a pull from another node) it reads it back into the arena.
A freed object's file is deleted; the node's spill directory goes when it stops.
"""
import logging
import os
import shutil

from rayx.exceptions import ObjectStoreFullError

logger = logging.getLogger("rayx.raylet")


class Spiller:
    def __init__(self, arena, objects, directory):
        self.arena = arena
        self.objects = objects
        self.directory = directory
        self.spilled_bytes = 0
        self.restored_bytes = 0

    def _path(self, object_id):
        return os.path.join(self.directory, object_id.hex())

    def room_for(self, nbytes):
        """A client could not fit ``nbytes``: its dropped refs were handled before it
        asked, so what nobody refers to is already freed; if that is not enough,
        referenced objects are spilled. Returns the largest free block."""
        if self.arena.stats()["largest_free_block"] < nbytes:
            self.make_room(nbytes)
        return self.arena.stats()["largest_free_block"]

    def make_room(self, nbytes):
        """Spill LRU objects until ``nbytes`` could fit; returns the bytes spilled."""
        arena = self.arena
        objects = self.objects
        spilled = 0
        for object_id in arena.lru_candidates(nbytes):
            if arena.stats()["largest_free_block"] >= nbytes:
                break
            entry = objects.get(object_id)
            if entry is None or not entry.in_arena or entry.spilled:
                continue
            buffer = arena.get(object_id)
            if buffer is None:
                continue
            os.makedirs(self.directory, exist_ok=True)
            path = self._path(object_id)
            with open(path, "wb") as f:
                f.write(memoryview(buffer))
            del buffer
            arena.delete(object_id)
            entry.spilled = path
            spilled += entry.size
        self.spilled_bytes += spilled
        if spilled:
            logger.info("spilled %d bytes to %s", spilled, self.directory)
        return spilled

    def restore(self, entry):
        """Read a spilled object back into the arena (spilling others if needed); done
        before anyone is told to read it from the arena."""
        arena = self.arena
        try:
            view = arena.create_object(entry.object_id, entry.size)
        except ObjectStoreFullError:
            self.make_room(entry.size)
            view = arena.create_object(entry.object_id, entry.size)
        restored = False
        try:
            with open(entry.spilled, "rb") as f:
                f.readinto(view)
            restored = True
        finally:
            del view          # no view may be alive when the object is sealed or aborted
            if not restored:
                arena.abort(entry.object_id)
        arena.seal(entry.object_id)
        self.forget(entry)
        self.restored_bytes += entry.size

    def remove_all(self):
        """The node stops: its spill files (and directory) go with it."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def forget(self, entry):
        """The object is freed (or back in the arena): drop its file."""
        try:
            os.unlink(entry.spilled)
        except OSError:
            pass
        entry.spilled = None
