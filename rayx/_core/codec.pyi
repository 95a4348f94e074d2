"""Type stubs of rayx._core.codec (see codec.pyx; rayx._core.pycodec has the same API)."""
from typing import Any, Iterable, Optional, Union

_Buffer = Union[bytes, bytearray, memoryview]

NORMAL_TASK: int
ACTOR_CREATION_TASK: int
ACTOR_TASK: int
ARG_VALUE: int
ARG_REF: int
STRATEGY_DEFAULT: int
STRATEGY_SPREAD: int
STRATEGY_NODE_AFFINITY: int
MAX_DEPTH: int
FIELD_NAMES: tuple[str, ...]

def dumps(obj: Any) -> bytes: ...
def loads(data: _Buffer) -> Any: ...
def loads_from(data: _Buffer, offset: int = 0) -> tuple[Any, int]: ...
def pack_frame(msg: Any) -> bytes: ...
def pack_frames(msgs: Iterable[Any]) -> bytes: ...

class FrameReader:
    max_frame_size: int
    def __init__(self, max_frame_size: int = 1 << 30) -> None: ...
    def feed(self, data: _Buffer) -> list[Any]: ...
    @property
    def buffered(self) -> int: ...
    @property
    def broken(self) -> bool: ...

class TaskSpec:
    task_type: int
    task_id: bytes
    job_id: bytes
    parent_task_id: bytes
    caller_id: bytes
    function_id: bytes
    function_name: str
    method_name: str
    args: list[tuple[int, str, bytes]]
    nested_refs: list[bytes]
    num_returns: int
    resources: dict[str, float]
    max_retries: int
    retry_exceptions: bool
    attempt: int
    actor_id: bytes
    sequence_number: int
    strategy: int
    strategy_node_id: bytes
    strategy_soft: bool
    max_restarts: int
    max_task_retries: int
    max_concurrency: int
    actor_name: str
    namespace: str
    detached: bool
    is_asyncio: bool
    extra: dict[Any, Any]
    def __init__(
        self, *, task_type: int = 0, task_id: bytes = b"", job_id: bytes = b"",
        parent_task_id: bytes = b"", caller_id: bytes = b"", function_id: bytes = b"",
        function_name: str = "", method_name: str = "",
        args: Optional[list[tuple[int, str, bytes]]] = None,
        nested_refs: Optional[list[bytes]] = None, num_returns: int = 1,
        resources: Optional[dict[str, float]] = None, max_retries: int = 3,
        retry_exceptions: bool = False, attempt: int = 0, actor_id: bytes = b"",
        sequence_number: int = 0, strategy: int = 0, strategy_node_id: bytes = b"",
        strategy_soft: bool = False, max_restarts: int = 0, max_task_retries: int = 0,
        max_concurrency: int = 1, actor_name: str = "", namespace: str = "",
        detached: bool = False, is_asyncio: bool = False, extra: Optional[dict[Any, Any]] = None,
    ) -> None: ...
    def encode(self) -> bytes: ...
    @staticmethod
    def decode(data: _Buffer) -> TaskSpec: ...
    def return_ids(self) -> list[bytes]: ...
    def arg_refs(self) -> list[bytes]: ...
    def shape_key(self) -> tuple[tuple[str, float], ...]: ...
    def actor_class_name(self) -> str: ...
    def retries_left(self) -> bool: ...
    def take_retry(self) -> bool: ...
    def copy(self) -> TaskSpec: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
