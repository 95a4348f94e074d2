"""Type stubs of rayx._core.store: the node's shared-memory object store."""

from typing import Any, Optional

OBJECT_ID_SIZE: int

class Arena:
    """One process's handle on the node's shared-memory arena."""

    path: str

    @staticmethod
    def create(path: str, capacity: int, populate: bool = False, object_entries: int = 0) -> Arena:
        """Create and format the file `path` (must not exist); raises ArenaError."""
    @staticmethod
    def attach(path: str) -> Arena:
        """Map an existing arena; raises ArenaError."""
    @property
    def capacity(self) -> int: ...
    @property
    def base_address(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def live_buffers(self) -> int: ...
    def create_object(self, object_id: bytes, size: int) -> memoryview:
        """Writable view of a new unsealed object; raises ObjectExistsError, ObjectStoreFullError."""
    def seal(self, object_id: bytes) -> None:
        """Raises ObjectNotFoundError, or ArenaError if already sealed."""
    def abort(self, object_id: bytes) -> None:
        """Frees an unsealed object; raises ObjectNotFoundError, or ArenaError if sealed."""
    def put(self, object_id: bytes, data: Any) -> None:
        """create_object + copy of a contiguous buffer (GIL released) + seal."""
    def get(self, object_id: bytes) -> Optional[ObjectBuffer]:
        """Pinned read-only buffer, or None if absent, unsealed or being deleted."""
    def contains(self, object_id: bytes) -> bool: ...
    def __contains__(self, object_id: bytes) -> bool: ...
    def delete(self, object_id: bytes) -> bool:
        """False if absent; True if freed or (pinned) deferred until the last release."""
    def lru_candidates(self, nbytes: int) -> list[bytes]: ...
    def release_pins_of(self, pid: int) -> int:
        """Drop a dead process's pins and unsealed objects; returns pins dropped."""
    def prefault(self, offset: int = 0, length: int = -1) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def validate(self) -> None:
        """Raises ArenaError if an invariant is broken."""
    def close(self) -> None:
        """Detach and unmap, or defer that until the last buffer is gone."""
    def unlink(self, missing_ok: bool = False) -> None: ...
    def __enter__(self) -> Arena: ...
    def __exit__(self, *exc_info: Any) -> None: ...
    def _lock_and_hang(self, notify_fd: int = -1) -> None: ...
    def _crash_after_writes(self, n: int) -> None: ...

class ObjectBuffer:
    """Read-only zero-copy buffer over a sealed object; holds one pin."""

    object_id: bytes
    @property
    def size(self) -> int: ...
    @property
    def address(self) -> int: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...
    def release(self) -> None:
        """Release the pin now; raises BufferError while views are alive."""


def debug_counters() -> dict[str, int]: ...
