"""Type stubs of rayx._core.checks (see checks.pyx): message field kinds and Validator."""
from typing import Any, Sequence

MAX_ID_BYTES: int
MAX_ITEMS: int
MAX_NUM_RETURNS: int
MAX_TEXT: int
MAX_ENTRIES: int
MAX_ARGS: int
MAX_FIELDS: int

KIND_ID: int
KIND_IDS: int
KIND_COUNT: int
KIND_FLAG: int
KIND_TEXT: int
KIND_BLOB: int
KIND_BLOB_OR_NONE: int
KIND_INFO: int
KIND_SPEC: int
KIND_VALUES: int
KIND_RESULTS: int
KIND_ARGS: int
KIND_ANY: int

def is_kind(kind: int, value: Any) -> bool: ...

class Validator:
    def __init__(self, required: int, kinds: Sequence[int]) -> None: ...
    def __call__(self, message: Any) -> bool: ...
