"""Pure-Python twin of ``rayx._core.codec``: the same API and byte-identical wire
format (documented at the top of codec.pyx), about ten times slower.

It exists so that the codec's tests run against two independent
implementations of one format (as msgpack-python does), and as a fallback
where the extension is not built. Keep the two in step: a change of format is a
change to both, and tests/test_codec.py checks that they produce the same bytes.
"""
import struct

from rayx.exceptions import CodecError

NORMAL_TASK, ACTOR_CREATION_TASK, ACTOR_TASK = 0, 1, 2
ARG_VALUE, ARG_REF = 0, 1
STRATEGY_DEFAULT, STRATEGY_SPREAD, STRATEGY_NODE_AFFINITY = 0, 1, 2

(T_NONE, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_BYTES, T_STR, T_LIST, T_TUPLE, T_DICT,
 T_SPEC) = range(11)
T_FIXINT = 0x80
SPEC_VERSION = 1
MAX_DEPTH = 100
F_RETRY_EXCEPTIONS, F_STRATEGY_SOFT, F_DETACHED, F_IS_ASYNCIO = 1, 2, 4, 8

_DOUBLE = struct.Struct("<d")
_U32 = struct.Struct("<I")

FIELD_NAMES = (
    "task_type", "task_id", "job_id", "parent_task_id", "caller_id", "function_id",
    "function_name", "method_name", "args", "nested_refs", "num_returns", "resources",
    "max_retries", "retry_exceptions", "attempt", "actor_id", "sequence_number",
    "strategy", "strategy_node_id", "strategy_soft", "max_restarts", "max_task_retries",
    "max_concurrency", "actor_name", "namespace", "detached", "is_asyncio",
    "owner_address", "runtime_env", "extra",
)
_DEFAULTS = dict(
    task_type=0, task_id=b"", job_id=b"", parent_task_id=b"", caller_id=b"",
    function_id=b"", function_name="", method_name="", args=None, nested_refs=None,
    num_returns=1, resources=None, max_retries=3, retry_exceptions=False, attempt=0,
    actor_id=b"", sequence_number=0, strategy=0, strategy_node_id=b"",
    strategy_soft=False, max_restarts=0, max_task_retries=0, max_concurrency=1,
    actor_name="", namespace="", detached=False, is_asyncio=False, owner_address="",
    runtime_env=b"", extra=None,
)
_ID_FIELDS = frozenset(["task_id", "job_id", "parent_task_id", "caller_id", "function_id",
                        "actor_id", "strategy_node_id"])
_BOOL_FIELDS = ("retry_exceptions", "strategy_soft", "detached", "is_asyncio")
_INT64 = (-(1 << 63), (1 << 63) - 1)


# ---------------------------------------------------------------------------
# Encoder

def _uvarint(out, v):
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _svarint(out, v, what="int"):
    if not _INT64[0] <= v <= _INT64[1]:
        raise CodecError(f"{what} out of the signed 64-bit range the codec carries: {v!r}")
    _uvarint(out, ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)


def _bytes(out, b):
    if isinstance(b, memoryview):
        b = b.tobytes()
    elif b is None:
        raise TypeError("expected bytes, not None")
    else:
        b = bytes(memoryview(b))
    _uvarint(out, len(b))
    out += b


def _str(out, s, name="str"):
    if not isinstance(s, str):
        raise TypeError(f"TaskSpec.{name} must be str, not {type(s).__name__}")
    b = s.encode("utf-8", "surrogatepass")
    _uvarint(out, len(b))
    out += b


def _enc(out, obj, depth):
    if obj is None:
        out.append(T_NONE)
    elif obj is True:
        out.append(T_TRUE)
    elif obj is False:
        out.append(T_FALSE)
    elif isinstance(obj, int):
        v = int(obj)
        if 0 <= v < 128:
            out.append(T_FIXINT + v)
        else:
            out.append(T_INT)
            _svarint(out, v)
    elif isinstance(obj, float):
        out.append(T_FLOAT)
        out += _DOUBLE.pack(obj)
    elif isinstance(obj, str):
        out.append(T_STR)
        _str(out, obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.append(T_BYTES)
        _bytes(out, obj)
    elif isinstance(obj, (tuple, list)):
        if depth >= MAX_DEPTH:
            raise CodecError(f"nesting deeper than {MAX_DEPTH} containers")
        out.append(T_TUPLE if isinstance(obj, tuple) else T_LIST)
        _uvarint(out, len(obj))
        for item in obj:
            _enc(out, item, depth + 1)
    elif isinstance(obj, dict):
        _enc_dict(out, obj, depth)
    elif isinstance(obj, TaskSpec):
        obj._encode_into(out, depth)
    else:
        raise TypeError(f"rayx codec cannot encode an object of type {type(obj).__name__}")


def _enc_dict(out, d, depth):
    if depth >= MAX_DEPTH:
        raise CodecError(f"nesting deeper than {MAX_DEPTH} containers")
    out.append(T_DICT)
    _uvarint(out, len(d))
    for k, v in d.items():
        _enc(out, k, depth + 1)
        _enc(out, v, depth + 1)


def dumps(obj):
    """Encode one message."""
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)


# ---------------------------------------------------------------------------
# Decoder

class _Reader:
    __slots__ = ("b", "pos", "end")

    def __init__(self, b, pos, end):
        self.b = b          # a memoryview of unsigned bytes
        self.pos = pos
        self.end = end

    def truncated(self, need, what):
        raise CodecError(f"truncated input: {what} needs {need} byte(s) at offset {self.pos}, "
                         f"only {self.end - self.pos} left")

    def byte(self, what):
        if self.pos >= self.end:
            self.truncated(1, what)
        self.pos += 1
        return self.b[self.pos - 1]

    def uvarint(self, what):
        result = shift = 0
        start = self.pos
        while True:
            b = self.byte(what)
            if shift == 63 and b > 1:
                raise CodecError(f"varint ({what}) at offset {start} overflows 64 bits")
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    def svarint(self, what):
        u = self.uvarint(what)
        return (u >> 1) ^ -(u & 1)

    def count(self, min_item, what):
        start = self.pos
        n = self.uvarint(what)
        if n > (self.end - self.pos) // min_item:
            raise CodecError(f"declared {what} {n} at offset {start} exceeds the "
                             f"{self.end - self.pos} byte(s) left")
        return n

    def raw(self, what):
        n = self.count(1, what)
        self.pos += n
        return bytes(self.b[self.pos - n:self.pos])

    def str(self, what):
        n = self.count(1, what)
        start = self.pos
        self.pos += n
        try:
            return str(self.b[start:self.pos], "utf-8", "surrogatepass")
        except UnicodeDecodeError as e:
            raise CodecError(f"invalid UTF-8 in {what} at offset {start}: {e.reason}") from None

    def double(self, what):
        if self.end - self.pos < 8:
            self.truncated(8, what)
        self.pos += 8
        return _DOUBLE.unpack_from(self.b, self.pos - 8)[0]


def _too_deep():
    raise CodecError(f"nesting deeper than {MAX_DEPTH} containers")


def _dec(r, depth):
    tag = r.byte("tag")
    if tag >= T_FIXINT:
        return tag - T_FIXINT
    if tag == T_STR:
        return r.str("str length")
    if tag == T_BYTES:
        return r.raw("bytes length")
    if tag == T_INT:
        return r.svarint("int")
    if tag == T_NONE:
        return None
    if tag == T_TRUE:
        return True
    if tag == T_FALSE:
        return False
    if tag == T_FLOAT:
        return r.double("float")
    if tag == T_LIST or tag == T_TUPLE:
        if depth >= MAX_DEPTH:
            _too_deep()
        n = r.count(1, "item count")
        items = [_dec(r, depth + 1) for _ in range(n)]
        return items if tag == T_LIST else tuple(items)
    if tag == T_DICT:
        return _dec_dict(r, depth)
    if tag == T_SPEC:
        return _dec_spec(r, depth)
    raise CodecError(f"unknown tag 0x{tag:02x} at offset {r.pos - 1}")


def _dec_dict(r, depth):
    if depth >= MAX_DEPTH:
        _too_deep()
    n = r.count(2, "dict size")
    d = {}
    for _ in range(n):
        k = _dec(r, depth + 1)
        v = _dec(r, depth + 1)
        try:
            d[k] = v
        except TypeError:
            raise CodecError(f"dict key of type {type(k).__name__} is not hashable "
                             f"(before offset {r.pos})") from None
    return d


def _dec_spec(r, depth):
    start = r.pos
    if r.byte("TaskSpec version") != SPEC_VERSION:
        raise CodecError(f"unsupported TaskSpec version {r.b[start]} at offset {start}")
    s = TaskSpec.__new__(TaskSpec)
    s.task_type = r.uvarint("task_type")
    if s.task_type > 2:
        raise CodecError(f"bad TaskSpec.task_type {s.task_type} before offset {r.pos}")
    s.task_id = r.raw("task_id length")
    s.job_id = r.raw("job_id length")
    s.parent_task_id = r.raw("parent_task_id length")
    s.caller_id = r.raw("caller_id length")
    s.function_id = r.raw("function_id length")
    s.function_name = r.str("function_name length")
    s.method_name = r.str("method_name length")
    args = []
    for _ in range(r.count(3, "arg count")):
        kind = r.uvarint("arg kind")
        if kind > 1:
            raise CodecError(f"bad TaskSpec arg kind {kind} before offset {r.pos}")
        kw = r.str("arg keyword length")
        args.append((kind, kw, r.raw("arg data length")))
    s.args = args
    s.nested_refs = [r.raw("nested ref length") for _ in range(r.count(1, "nested_refs count"))]
    s.num_returns = r.svarint("num_returns")
    res = {}
    for _ in range(r.count(9, "resources count")):
        name = r.str("resource name length")
        res[name] = r.double("resource amount")
    s.resources = res
    s.max_retries = r.svarint("max_retries")
    flags = r.byte("flags")
    if flags & ~15:
        raise CodecError(f"unknown TaskSpec flag bits 0x{flags:02x} at offset {r.pos - 1}")
    s.retry_exceptions = bool(flags & F_RETRY_EXCEPTIONS)
    s.strategy_soft = bool(flags & F_STRATEGY_SOFT)
    s.detached = bool(flags & F_DETACHED)
    s.is_asyncio = bool(flags & F_IS_ASYNCIO)
    s.attempt = r.svarint("attempt")
    s.actor_id = r.raw("actor_id length")
    s.sequence_number = r.svarint("sequence_number")
    s.strategy = r.uvarint("strategy")
    if s.strategy > 2:
        raise CodecError(f"bad TaskSpec.strategy {s.strategy} before offset {r.pos}")
    s.strategy_node_id = r.raw("strategy_node_id length")
    s.max_restarts = r.svarint("max_restarts")
    s.max_task_retries = r.svarint("max_task_retries")
    s.max_concurrency = r.svarint("max_concurrency")
    s.actor_name = r.str("actor_name length")
    s.namespace = r.str("namespace length")
    s.owner_address = r.str("owner_address length")
    s.runtime_env = r.raw("runtime_env length")
    start = r.pos
    if r.byte("extra tag") != T_DICT:
        raise CodecError(f"TaskSpec.extra at offset {start} is not a dict")
    s.extra = _dec_dict(r, depth)
    return s


def _view(data):
    if isinstance(data, memoryview):
        if not data.contiguous:
            data = data.tobytes()
    elif not isinstance(data, (bytes, bytearray)):
        data = memoryview(data)             # TypeError if not a buffer
    return memoryview(data).cast("B")


def loads(data):
    """Decode one message from bytes, bytearray or memoryview; CodecError if malformed."""
    mv = _view(data)
    if len(mv) == 0:
        raise CodecError("empty input")
    r = _Reader(mv, 0, len(mv))
    obj = _dec(r, 0)
    if r.pos != r.end:
        raise CodecError(f"{r.end - r.pos} trailing byte(s) after the value at offset {r.pos}")
    return obj


def loads_from(data, offset=0):
    """Decode the value starting at ``offset``; returns ``(value, end_offset)``."""
    mv = _view(data)
    if not 0 <= offset <= len(mv):
        raise CodecError(f"offset {offset} outside the {len(mv)}-byte buffer")
    r = _Reader(mv, offset, len(mv))
    obj = _dec(r, 0)
    return obj, r.pos


# ---------------------------------------------------------------------------
# TaskSpec

def _taskspec_from_bytes(data):
    return TaskSpec.decode(data)


class TaskSpec:
    """Pure-Python TaskSpec; same fields and methods as the compiled one."""

    __slots__ = FIELD_NAMES

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(FIELD_NAMES)
        if unknown:
            raise TypeError(f"TaskSpec got unexpected keyword argument(s) {sorted(unknown)}")
        for name in FIELD_NAMES:
            setattr(self, name, kwargs.get(name, _DEFAULTS[name]))
        if self.args is None:
            self.args = []
        if self.nested_refs is None:
            self.nested_refs = []
        if self.resources is None:
            self.resources = {}
        if self.extra is None:
            self.extra = {}
        for name in _BOOL_FIELDS:
            setattr(self, name, bool(getattr(self, name)))

    def _encode_into(self, out, depth):
        if not 0 <= self.task_type <= 2:
            raise ValueError(f"TaskSpec.task_type must be 0, 1 or 2, got {self.task_type}")
        if not 0 <= self.strategy <= 2:
            raise ValueError(f"TaskSpec.strategy must be 0, 1 or 2, got {self.strategy}")
        out.append(T_SPEC)
        out.append(SPEC_VERSION)
        _uvarint(out, self.task_type)
        for name in ("task_id", "job_id", "parent_task_id", "caller_id", "function_id"):
            _bytes(out, getattr(self, name))
        _str(out, self.function_name, "function_name")
        _str(out, self.method_name, "method_name")
        _uvarint(out, len(self.args))
        for a in self.args:
            if not isinstance(a, (tuple, list)) or len(a) != 3:
                raise TypeError(f"TaskSpec.args items must be (kind, keyword, data) tuples, got {a!r}")
            if not (a[0] == 0 or a[0] == 1):
                raise ValueError(f"TaskSpec arg kind must be ARG_VALUE (0) or ARG_REF (1), got {a[0]!r}")
            out.append(1 if a[0] else 0)
            _str(out, a[1], "args keyword")
            _bytes(out, a[2])
        _uvarint(out, len(self.nested_refs))
        for ref in self.nested_refs:
            _bytes(out, ref)
        _svarint(out, self.num_returns)
        _uvarint(out, len(self.resources))
        for name, amount in self.resources.items():
            _str(out, name, "resources key")
            out += _DOUBLE.pack(amount)
        _svarint(out, self.max_retries)
        out.append((F_RETRY_EXCEPTIONS if self.retry_exceptions else 0)
                   | (F_STRATEGY_SOFT if self.strategy_soft else 0)
                   | (F_DETACHED if self.detached else 0)
                   | (F_IS_ASYNCIO if self.is_asyncio else 0))
        _svarint(out, self.attempt)
        _bytes(out, self.actor_id)
        _svarint(out, self.sequence_number)
        _uvarint(out, self.strategy)
        _bytes(out, self.strategy_node_id)
        _svarint(out, self.max_restarts)
        _svarint(out, self.max_task_retries)
        _svarint(out, self.max_concurrency)
        _str(out, self.actor_name, "actor_name")
        _str(out, self.namespace, "namespace")
        _str(out, self.owner_address, "owner_address")
        _bytes(out, self.runtime_env)
        _enc_dict(out, self.extra, depth)

    def encode(self):
        out = bytearray()
        self._encode_into(out, 0)
        return bytes(out)

    @staticmethod
    def decode(data):
        obj = loads(data)
        if type(obj) is not TaskSpec:
            raise CodecError(f"expected an encoded TaskSpec, got a {type(obj).__name__}")
        return obj

    def return_ids(self):
        if not isinstance(self.task_id, bytes) or len(self.task_id) != 16:
            raise ValueError("TaskSpec.task_id must be 16 bytes to derive return ids")
        return [self.task_id + _U32.pack(i) for i in range(1, self.num_returns + 1)]

    def arg_refs(self):
        return [a[2] for a in self.args if a[0] == ARG_REF]

    def shape_key(self):
        return tuple(sorted((k, float(v)) for k, v in self.resources.items() if v != 0))

    def copy(self):
        c = TaskSpec.__new__(TaskSpec)
        for name in FIELD_NAMES:
            setattr(c, name, getattr(self, name))
        c.args = list(self.args)
        c.nested_refs = list(self.nested_refs)
        c.resources = dict(self.resources)
        c.extra = dict(self.extra)
        return c

    def _astuple(self):
        return tuple(getattr(self, name) for name in FIELD_NAMES)

    def __eq__(self, other):
        if not isinstance(other, TaskSpec):
            return NotImplemented
        return self._astuple() == other._astuple()

    __hash__ = None

    def __repr__(self):
        parts = []
        for name, value in zip(FIELD_NAMES, self._astuple()):
            default = _DEFAULTS[name]
            if default is None:
                default = [] if name in ("args", "nested_refs") else {}
            if value == default and name != "task_id":
                continue
            if name in _ID_FIELDS and isinstance(value, bytes):
                parts.append(f"{name}={value.hex()}")
            else:
                parts.append(f"{name}={value!r}")
        return "TaskSpec(" + ", ".join(parts) + ")"

    def __reduce__(self):
        return (_taskspec_from_bytes, (self.encode(),))


# ---------------------------------------------------------------------------
# Framing

def _frame(out, msg):
    start = len(out)
    out += b"\0\0\0\0"
    _enc(out, msg, 0)
    n = len(out) - start - 4
    if n > 0xFFFFFFFF:
        raise CodecError(f"message of {n} bytes does not fit a frame (max 2**32-1)")
    _U32.pack_into(out, start, n)


def pack_frame(msg):
    out = bytearray()
    _frame(out, msg)
    return bytes(out)


def pack_frames(msgs):
    out = bytearray()
    for msg in msgs:
        _frame(out, msg)
    return bytes(out)


class FrameReader:
    """Incremental frame decoder; see codec.FrameReader."""

    def __init__(self, max_frame_size=1 << 30):
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._need = 4
        self._error = None

    @property
    def buffered(self):
        return len(self._buf)

    @property
    def broken(self):
        return self._error is not None

    def _parse(self, mv, out):
        pos, n = 0, len(mv)
        self._need = 4
        while n - pos >= 4:
            flen = _U32.unpack_from(mv, pos)[0]
            if flen > self.max_frame_size:
                raise CodecError(f"frame of {flen} bytes exceeds max_frame_size {self.max_frame_size}")
            if flen == 0:
                raise CodecError("empty frame")
            if n - pos - 4 < flen:
                self._need = 4 + flen
                break
            r = _Reader(mv, pos + 4, pos + 4 + flen)
            out.append(_dec(r, 0))
            if r.pos != r.end:
                raise CodecError(f"{r.end - r.pos} trailing byte(s) inside a {flen}-byte frame")
            pos += 4 + flen
        return pos

    def feed(self, data):
        if self._error is not None:
            raise CodecError(f"FrameReader is unusable after an earlier error: {self._error}")
        out = []
        try:
            if not self._buf:
                mv = _view(data)
                used = self._parse(mv, out)
                if used < len(mv):
                    self._buf += mv[used:]
            else:
                self._buf += data
                if len(self._buf) < self._need:
                    return out
                with memoryview(self._buf) as mv:
                    used = self._parse(mv, out)
                del self._buf[:used]
        except CodecError as e:
            self._error = e
            self._buf = bytearray()
            raise
        return out
