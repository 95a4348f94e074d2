"""rayx._core.codec: round trips (hypothesis), malformed input (CodecError, never
a crash), the TaskSpec, framing, and golden byte strings that pin the wire
format (tests named *_golden_*): any change to the bytes the codec writes
fails them, so a format change is always a decision, with a new TaskSpec
version byte where specs change.
"""
import math
import pickle
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayx._core import codec
from rayx._core.ids import ObjectID, TaskID
from rayx.exceptions import CodecError

INT64 = st.integers(-(2**63), 2**63 - 1)


def same(a, b):
    """Equality that also insists on identical types (1 vs 1.0 vs True) and float bits."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            if not (same(ka, kb) and same(va, vb)):
                return False
        return True
    return a == b


# ---------------------------------------------------------------------------
# Strategies

scalars = (st.none() | st.booleans() | INT64 | st.floats(allow_nan=True) | st.binary(max_size=64)
           | st.text(max_size=32))
keys = st.recursive(st.none() | st.booleans() | INT64 | st.floats(allow_nan=False)
                    | st.binary(max_size=16) | st.text(max_size=16),
                    lambda k: st.lists(k, max_size=3).map(tuple), max_leaves=4)
values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=6) | st.lists(children, max_size=6).map(tuple)
                      | st.dictionaries(keys, children, max_size=6)),
    max_leaves=40)
json_like = st.recursive(st.none() | st.booleans() | INT64 | st.text(max_size=8),
                         lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                         max_leaves=10)
id16 = st.binary(min_size=16, max_size=16)


def spec_kwargs():
    return st.fixed_dictionaries(dict(
        task_type=st.integers(0, 2),
        task_id=id16,
        job_id=st.binary(min_size=4, max_size=4),
        parent_task_id=st.just(b"") | id16,
        caller_id=st.just(b"") | id16,
        function_id=st.binary(max_size=40),
        function_name=st.text(max_size=40),
        method_name=st.text(max_size=20),
        args=st.lists(st.tuples(st.integers(0, 1), st.text(max_size=10), st.binary(max_size=300)),
                      max_size=8),
        nested_refs=st.lists(st.binary(min_size=20, max_size=20), max_size=4),
        num_returns=INT64,
        resources=st.dictionaries(st.text(max_size=12), st.floats(allow_nan=False), max_size=10),
        max_retries=INT64,
        retry_exceptions=st.booleans(),
        attempt=INT64,
        actor_id=st.just(b"") | id16,
        sequence_number=INT64,
        strategy=st.integers(0, 2),
        strategy_node_id=st.binary(max_size=16),
        strategy_soft=st.booleans(),
        max_restarts=INT64,
        max_task_retries=INT64,
        max_concurrency=INT64,
        actor_name=st.text(max_size=20),
        namespace=st.text(max_size=20),
        detached=st.booleans(),
        is_asyncio=st.booleans(),
        extra=st.dictionaries(st.text(max_size=8), json_like, max_size=4),
    ))


def typical_spec_kwargs():
    return dict(
        task_id=bytes(range(16)), job_id=b"\x01\x00\x00\x00", parent_task_id=b"\x02" * 16,
        caller_id=b"\x03" * 16, function_id=b"\x04" * 20, function_name="mymodule.compute",
        args=[(0, "", b"\x80\x05K\x01."), (1, "x", b"\x05" * 20)],
        nested_refs=[b"\x06" * 20], resources={"CPU": 1.0, "GPU": 0.5}, extra={"trace": "abc"})


hsettings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------
# Generic messages

@pytest.mark.parametrize("value", [
    None, True, False, 0, 1, 127, 128, -1, -128, 2**31, 2**63 - 1, -(2**63),
    0.0, -0.0, 1.5, float("inf"), -float("inf"), 1e-300,
    b"", b"\x00\xff", "", "h\u00e9llo \u4e16\u754c \U0001f600", "\ud800 lone surrogate",
    [], (), {}, [1, [2, [3, (4,)]]], (1,), ((),), {"a": 1, 2: "b", (1, 2): [None], b"k": {}},
    {None: None, True: False, 1.5: -1.5},
])
def test_round_trip_values(value):
    data = codec.dumps(value)
    assert isinstance(data, bytes)
    for form in (data, bytearray(data), memoryview(data)):
        assert same(codec.loads(form), value)


def test_nan_round_trips():
    out = codec.loads(codec.dumps(float("nan")))
    assert math.isnan(out)


def test_bytes_like_in_bytes_out():
    for v in (bytearray(b"abc"), memoryview(b"abc"), memoryview(b"xabcx")[1:4],
              memoryview(b"a0b0c0")[::2]):
        assert same(codec.loads(codec.dumps(v)), b"abc")
    assert same(codec.loads(codec.dumps([bytearray(b"x")])), [b"x"])


def test_subclasses_encode_as_base():
    import enum

    class Color(enum.IntEnum):
        RED = 5

    class S(str):
        pass

    assert same(codec.loads(codec.dumps([Color.RED, S("x")])), [5, "x"])


def test_int_range():
    for v in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(CodecError, match="64-bit"):
            codec.dumps(v)
        with pytest.raises(CodecError):
            codec.dumps([1, {"k": v}])


def test_unsupported_type():
    for v in (object(), {1, 2}, 1j, [lambda: 0]):
        with pytest.raises(TypeError, match="cannot encode"):
            codec.dumps(v)


def test_depth_bound():
    v = []
    for _ in range(codec.MAX_DEPTH):
        v = [v]
    with pytest.raises(CodecError, match="nesting"):
        codec.dumps(v)
    ok = v[0]
    assert same(codec.loads(codec.dumps(ok)), ok)
    deep = b"\x07\x01" * (codec.MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(CodecError, match="nesting"):
        codec.loads(deep)
    deep_dict = b"\x09\x01\x80" * (codec.MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(CodecError, match="nesting"):
        codec.loads(deep_dict)
    huge = b"\x07\x01" * 100000 + b"\x00"
    with pytest.raises(CodecError):
        codec.loads(huge)


def test_self_reference_is_bounded():
    a = []
    a.append(a)
    with pytest.raises(CodecError, match="nesting"):
        codec.dumps(a)


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"\x0b", "unknown tag"),
    (b"\x7f", "unknown tag"),
    (b"\x00\x00", "trailing"),
    (b"\x05\x05abc", "exceeds"),
    (b"\x06\x02\xff\xfe", "UTF-8"),
    (b"\x04\x00\x00", "truncated"),
    (b"\x03" + b"\xff" * 9 + b"\x02", "overflows"),
    (b"\x03" + b"\xff" * 12, "overflows"),
    (b"\x03\x80", "truncated"),
    (b"\x07\xff\xff\xff\xff\x0f", "exceeds"),
    (b"\x09\x01\x07\x00\x00", "hashable"),
    (b"\x09\x02\x80\x80\x80", "exceeds"),
    (b"\x0a\x01", "version"),         # version 1 (with owner_address, runtime_env) is gone
    (b"\x0a\x03", "version"),
    (b"\x0a\x02\x03", "task_type"),
])
def test_malformed_messages(data, match):
    with pytest.raises(CodecError, match=match):
        codec.loads(data)


def test_loads_rejects_non_buffers():
    with pytest.raises(TypeError):
        codec.loads("not bytes")
    with pytest.raises(TypeError):
        codec.loads(None)


def test_loads_from():
    data = codec.dumps("first") + codec.dumps([1, 2]) + codec.dumps(None)
    pos, out = 0, []
    while pos < len(data):
        obj, pos = codec.loads_from(memoryview(data), pos)
        out.append(obj)
    assert out == ["first", [1, 2], None] and pos == len(data)
    obj, end = codec.loads_from(bytearray(data), 0)
    assert obj == "first" and end == len(codec.dumps("first"))
    for bad in (-1, len(data) + 1):
        with pytest.raises(CodecError):
            codec.loads_from(data, bad)
    with pytest.raises(CodecError, match="truncated"):
        codec.loads_from(data, len(data))


@hsettings
@given(value=values)
def test_hypothesis_round_trip(value):
    data = codec.dumps(value)
    assert same(codec.loads(data), value)
    # Every strict prefix is a truncated value.
    for cut in sorted({0, len(data) // 2, len(data) - 1}):
        if cut < len(data):
            with pytest.raises(CodecError):
                codec.loads(data[:cut])
    with pytest.raises(CodecError, match="trailing"):
        codec.loads(data + b"\x00")


def _decode_or_codec_error(data):
    try:
        codec.loads(data)
    except CodecError:
        pass


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_garbage(data):
    _decode_or_codec_error(data)
    _decode_or_codec_error(b"\x0a\x02" + data)       # garbage that starts like a TaskSpec


@hsettings
@given(value=values, seed=st.integers(0, 2**32))
def test_bit_flips_and_truncation(value, seed):
    data = bytearray(codec.dumps(value))
    rng = random.Random(seed)
    for _ in range(20):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(flipped))
            flipped[i] ^= 1 << rng.randrange(8)
        _decode_or_codec_error(bytes(flipped))
        with pytest.raises(CodecError):
            codec.loads(bytes(data[:rng.randrange(len(data))]))


def test_exhaustive_truncation_and_flips_of_a_spec():
    data = codec.TaskSpec(**typical_spec_kwargs()).encode()
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            codec.loads(data[:cut])
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            _decode_or_codec_error(bytes(flipped))


# ---------------------------------------------------------------------------
# TaskSpec

def test_spec_defaults():
    s = codec.TaskSpec()
    assert s.task_type == codec.NORMAL_TASK == 0
    assert (s.task_id, s.job_id, s.parent_task_id, s.caller_id, s.function_id) == (b"",) * 5
    assert (s.function_name, s.method_name, s.actor_name, s.namespace) == ("",) * 4
    assert s.args == [] and s.nested_refs == [] and s.resources == {} and s.extra == {}
    assert s.num_returns == 1 and s.max_retries == 3 and s.attempt == 0
    assert s.retry_exceptions is False and s.strategy_soft is False
    assert s.detached is False and s.is_asyncio is False
    assert s.strategy == codec.STRATEGY_DEFAULT and s.strategy_node_id == b""
    assert (s.max_restarts, s.max_task_retries, s.max_concurrency) == (0, 0, 1)
    assert s.actor_id == b"" and s.sequence_number == 0
    # Containers are not shared between instances.
    t = codec.TaskSpec()
    s.args.append((0, "", b"x"))
    s.resources["CPU"] = 1.0
    assert t.args == [] and t.resources == {}
    assert (codec.ACTOR_CREATION_TASK, codec.ACTOR_TASK) == (1, 2)
    assert (codec.ARG_VALUE, codec.ARG_REF) == (0, 1)
    assert (codec.STRATEGY_SPREAD, codec.STRATEGY_NODE_AFFINITY) == (1, 2)


def test_spec_round_trip_typical():
    s = codec.TaskSpec(**typical_spec_kwargs())
    data = s.encode()
    assert data == codec.dumps(s)
    assert len(data) < 256          # 112 bytes of it are ids
    for form in (data, bytearray(data), memoryview(data)):
        t = codec.TaskSpec.decode(form)
        assert t == s and not (t != s)
        assert same(t.args, s.args)
    assert codec.loads(data) == s
    msg = ("submit", 7, [s, s], {"spec": s})
    out = codec.loads(codec.dumps(msg))
    assert out == msg and type(out[2][0]) is codec.TaskSpec


def test_spec_every_field_round_trips():
    kw = dict(
        task_type=codec.ACTOR_TASK, task_id=b"\x01" * 16, job_id=b"\xff\xff\xff\xff",
        parent_task_id=b"", caller_id=b"\x09" * 16, function_id=b"\x00" * 20,
        function_name="Counter.\u00fcber \U0001f680", method_name="inc\u2603",
        args=[(0, "", b""), (1, "kw\u00e9", b"\x07" * 20), (0, "big", bytes(range(256)) * 1000)],
        nested_refs=[b"\x01" * 20, b"\x02" * 20], num_returns=-5,
        resources={f"r{i}\u00e9": i / 7 for i in range(50)}, max_retries=-1,
        retry_exceptions=True, attempt=2**63 - 1, actor_id=b"\x0a" * 16,
        sequence_number=-(2**63), strategy=codec.STRATEGY_NODE_AFFINITY,
        strategy_node_id=b"\x0b" * 16, strategy_soft=True, max_restarts=-1,
        max_task_retries=123456789, max_concurrency=1000, actor_name="my actor",
        namespace="ns\u00e9", detached=True, is_asyncio=True,
        extra={"a": [1, (2, None)], "b": {"c": b"\x00"}},
    )
    s = codec.TaskSpec(**kw)
    t = codec.TaskSpec.decode(s.encode())
    for name, value in kw.items():
        assert same(getattr(t, name), value), name
    assert t == s


def test_spec_fields_are_writable():
    s = codec.TaskSpec(**typical_spec_kwargs())
    s.attempt += 1
    s.function_name = "other.g"
    s.resources["memory"] = 1e9
    s.args.append((codec.ARG_REF, "", b"\x08" * 20))
    s.detached = True
    t = codec.TaskSpec.decode(s.encode())
    assert t.attempt == 1 and t.function_name == "other.g" and t.resources["memory"] == 1e9
    assert t.arg_refs() == [b"\x05" * 20, b"\x08" * 20] and t.detached is True


def test_spec_equality_and_copy():
    a = codec.TaskSpec(**typical_spec_kwargs())
    b = codec.TaskSpec(**typical_spec_kwargs())
    assert a == b
    b.attempt = 1
    assert a != b
    c = a.copy()
    assert c == a and c is not a
    c.args.append((0, "", b""))
    c.resources["X"] = 1.0
    assert a.args != c.args and "X" not in a.resources
    assert a != "not a spec"
    with pytest.raises(TypeError):
        hash(a)


def test_spec_pickle_and_repr():
    s = codec.TaskSpec(**typical_spec_kwargs())
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(s, protocol=proto)) == s
    r = repr(s)
    assert r.startswith("TaskSpec(") and "mymodule.compute" in r and bytes(range(16)).hex() in r
    assert "max_retries" not in r     # defaults are left out


def test_spec_return_ids_match_object_ids():
    s = codec.TaskSpec(**typical_spec_kwargs(), num_returns=3)
    tid = TaskID(s.task_id)
    assert s.return_ids() == [ObjectID.for_return(tid, i).binary() for i in (1, 2, 3)]
    s.num_returns = 0
    assert s.return_ids() == []
    s.task_id = b"short"
    with pytest.raises(ValueError):
        s.return_ids()


def test_spec_arg_refs_and_shape_key():
    s = codec.TaskSpec(args=[(0, "", b"v"), (1, "", b"a" * 20), (0, "k", b"w"), (1, "r", b"b" * 20)])
    assert s.arg_refs() == [b"a" * 20, b"b" * 20]
    assert s.shape_key() == ()
    s.resources = {"GPU": 1, "CPU": 2.0, "zero": 0}
    key = s.shape_key()
    assert key == (("CPU", 2.0), ("GPU", 1.0))
    assert hash(key) == hash(codec.TaskSpec(resources={"CPU": 2, "GPU": 1.0}).shape_key())
    assert codec.TaskSpec(resources={"CPU": 1}).shape_key() == (("CPU", 1.0),)


def test_spec_decode_rejects_non_specs():
    with pytest.raises(CodecError, match="TaskSpec"):
        codec.TaskSpec.decode(codec.dumps([1, 2]))
    with pytest.raises(CodecError):
        codec.TaskSpec.decode(b"")


def test_spec_encode_validates():
    with pytest.raises(ValueError):
        codec.TaskSpec(task_type=3).encode()
    with pytest.raises(ValueError):
        codec.TaskSpec(strategy=7).encode()
    with pytest.raises(ValueError):
        codec.TaskSpec(args=[(2, "", b"")]).encode()
    with pytest.raises(TypeError):
        codec.TaskSpec(args=[(0, "", b"", "extra")]).encode()
    with pytest.raises(TypeError):
        codec.TaskSpec(args=[(0, 5, b"")]).encode()
    with pytest.raises(TypeError):
        codec.TaskSpec(extra={"f": object()}).encode()


def test_spec_attribute_types_are_enforced():
    s = codec.TaskSpec()
    with pytest.raises(TypeError):
        s.num_returns = "two"
    with pytest.raises(TypeError):
        s.task_id = "not bytes"
    with pytest.raises(OverflowError):
        s.attempt = 2**63
    with pytest.raises(TypeError):
        codec.TaskSpec(bogus=1)
    with pytest.raises(TypeError):
        codec.TaskSpec(task_id=None)
    s.task_id = None
    with pytest.raises(TypeError, match="task_id"):
        s.encode()


@hsettings
@given(kw=spec_kwargs())
def test_hypothesis_spec_round_trip(kw):
    s = codec.TaskSpec(**kw)
    data = s.encode()
    t = codec.TaskSpec.decode(data)
    for name, value in kw.items():
        assert same(getattr(t, name), value), name
    assert t == s


# ---------------------------------------------------------------------------
# Framing

MESSAGES = [("submit", typical_spec_kwargs()["task_id"], [1, 2.5, None]), "ping", 0, b"\x00" * 1000,
            {"lease": {"CPU": 1.0}}, [], ("done", b"\x01" * 20, True)]


def test_pack_frame_layout():
    f = codec.pack_frame("hi")
    body = codec.dumps("hi")
    assert f == struct.pack("<I", len(body)) + body
    assert codec.pack_frames(["hi", "hi"]) == f + f
    assert codec.pack_frames([]) == b""


def test_frames_whole_and_bytewise():
    data = codec.pack_frames(MESSAGES)
    assert codec.FrameReader().feed(data) == MESSAGES
    r = codec.FrameReader()
    out = []
    for i in range(len(data)):
        out += r.feed(data[i:i + 1])
    assert out == MESSAGES and r.buffered == 0
    r = codec.FrameReader()
    assert r.feed(bytearray(data)) == MESSAGES
    assert r.feed(memoryview(data)) == MESSAGES
    assert r.feed(b"") == []


@hsettings
@given(msgs=st.lists(values, max_size=10), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_frames_split_anywhere(msgs, cuts):
    data = codec.pack_frames(msgs)
    points = sorted({c % (len(data) + 1) for c in cuts})
    r = codec.FrameReader()
    out, prev = [], 0
    for p in points + [len(data)]:
        out += r.feed(data[prev:p])
        prev = p
    assert len(out) == len(msgs) and all(same(a, b) for a, b in zip(out, msgs))
    assert r.buffered == 0


def test_frame_too_large_breaks_reader():
    r = codec.FrameReader(max_frame_size=100)
    assert r.feed(codec.pack_frame(b"x" * 50)) == [b"x" * 50]
    big = codec.pack_frame(b"x" * 200)
    with pytest.raises(CodecError, match="max_frame_size"):
        r.feed(big[:4])                 # the header alone is enough to refuse it
    assert r.broken
    with pytest.raises(CodecError, match="unusable"):
        r.feed(codec.pack_frame(1))


def test_frame_too_large_after_partial():
    r = codec.FrameReader(max_frame_size=100)
    assert r.feed(codec.pack_frame(1) + b"\xff") == [1]
    with pytest.raises(CodecError, match="max_frame_size"):
        r.feed(b"\xff\xff\x00")


@pytest.mark.parametrize("bad", [
    b"\x00\x00\x00\x00",                       # empty frame
    b"\x02\x00\x00\x00\x00\x00",               # trailing byte inside the frame
    b"\x01\x00\x00\x00\x0b",                   # unknown tag
    b"\x02\x00\x00\x00\x05\x05",               # bytes longer than the frame
])
def test_malformed_frame_breaks_reader(bad):
    r = codec.FrameReader()
    good = codec.pack_frame("ok")
    with pytest.raises(CodecError):
        r.feed(good + bad + good)
    with pytest.raises(CodecError, match="unusable"):
        r.feed(good)
    # Same through the buffered path.
    r = codec.FrameReader()
    assert r.feed(good + bad[:1]) == ["ok"]
    with pytest.raises(CodecError):
        r.feed(bad[1:])


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=50), max_size=8))
def test_frame_reader_garbage(chunks):
    r = codec.FrameReader(max_frame_size=1 << 16)
    for c in chunks:
        try:
            r.feed(c)
        except CodecError:
            break


def test_many_frames_one_chunk_and_big_frame_many_chunks():
    n = 20000
    data = codec.pack_frames([("t", i) for i in range(n)])
    out = codec.FrameReader().feed(data)
    assert len(out) == n and out[-1] == ("t", n - 1)
    big = codec.pack_frame(b"z" * (1 << 20))
    r = codec.FrameReader()
    out = []
    step = 1024
    for i in range(0, len(big), step):
        out += r.feed(big[i:i + step])
    assert out == [b"z" * (1 << 20)]


# ---------------------------------------------------------------------------
# Golden bytes: the wire format, pinned. These were computed once (the generic
# values and frames agreed byte for byte with the pure-Python codec this project
# had until then; the TaskSpecs are its version-1 bytes with version byte 2 and
# without the two empty fields version 2 dropped) and must never change by
# accident.

GOLDEN_VALUES = [
    (None, "00"),
    (False, "01"),
    (True, "02"),
    (0, "80"),
    (127, "ff"),
    (128, "038002"),
    (-1, "0301"),
    (300, "03d804"),
    (-(2**63), "03ffffffffffffffffff01"),
    (2**63 - 1, "03feffffffffffffffff01"),
    (1.5, "04000000000000f83f"),
    (-0.0, "040000000000000080"),
    (float("inf"), "04000000000000f07f"),
    (b"", "0500"),
    (b"\x00\xff", "050200ff"),
    (b"x" * 200,
     "05c801787878787878787878787878787878787878787878787878787878787878787878"
     "787878787878787878787878787878787878787878787878787878787878787878787878"
     "787878787878787878787878787878787878787878787878787878787878787878787878"
     "787878787878787878787878787878787878787878787878787878787878787878787878"
     "787878787878787878787878787878787878787878787878787878787878787878787878"
     "7878787878787878787878787878787878787878787878"),
    ("", "0600"),
    ("h\u00e9llo \u4e16\u754c \U0001f600", "061268c3a96c6c6f20e4b896e7958c20f09f9880"),
    ("\ud800", "0603eda080"),
    ([], "0700"),
    ((), "0800"),
    ({}, "0900"),
    ([1, [2, [3, (4,)]]], "070281070282070283080184"),
    ({"a": 1, 2: "b", (1, 2): [None], b"k": {}, None: True, 1.5: -1.5},
     "090606016181820601620802818207010005016b0900000204000000000000f83f040000"
     "00000000f8bf"),
]


@pytest.mark.parametrize("value,golden", GOLDEN_VALUES, ids=[str(i) for i in range(len(GOLDEN_VALUES))])
def test_golden_values(value, golden):
    assert codec.dumps(value).hex() == golden
    assert same(codec.loads(bytes.fromhex(golden)), value)


EVERY_FIELD_GOLDEN_KWARGS = dict(
    task_type=codec.ACTOR_TASK, task_id=b"\x01" * 16, job_id=b"\xff\xff\xff\xff",
    parent_task_id=b"", caller_id=b"\x09" * 16, function_id=b"\x00" * 20,
    function_name="Counter.\u00fcber", method_name="inc",
    args=[(0, "", b""), (1, "kw", b"\x07" * 20)], nested_refs=[b"\x01" * 20], num_returns=-5,
    resources={"CPU": 0.25, "r\u00e9": 3.0}, max_retries=-1, retry_exceptions=True,
    attempt=2**63 - 1, actor_id=b"\x0a" * 16, sequence_number=-(2**63),
    strategy=codec.STRATEGY_NODE_AFFINITY, strategy_node_id=b"\x0b" * 16, strategy_soft=True,
    max_restarts=-1, max_task_retries=123456789, max_concurrency=1000, actor_name="my actor",
    namespace="ns", detached=True, is_asyncio=True,
    extra={"a": [1, (2, None)], "b": {"c": b"\x00"}},
)

GOLDEN_SPECS = [
    ("default", {},
     "0a020000000000000000000002000600000000000000000200000900"),
    ("typical", typical_spec_kwargs(),
     "0a020010000102030405060708090a0b0c0d0e0f04010000001002020202020202020202"
     "020202020202100303030303030303030303030303030314040404040404040404040404"
     "0404040404040404106d796d6f64756c652e636f6d70757465000200000580054b012e01"
     "017814050505050505050505050505050505050505050501140606060606060606060606"
     "060606060606060606020203435055000000000000f03f03475055000000000000e03f06"
     "00000000000000000200000901060574726163650603616263"),
    ("every field", EVERY_FIELD_GOLDEN_KWARGS,
     "0a0202100101010101010101010101010101010104ffffffff0010090909090909090909"
     "090909090909091400000000000000000000000000000000000000000d436f756e746572"
     "2ec3bc62657203696e630200000001026b77140707070707070707070707070707070707"
     "070707011401010101010101010101010101010101010101010902034350550000000000"
     "00d03f0372c3a90000000000000840010ffeffffffffffffffff01100a0a0a0a0a0a0a0a"
     "0a0a0a0a0a0a0a0affffffffffffffffff0102100b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"
     "01aab4de75d00f086d79206163746f72026e730902060161070281080282000601620901"
     "060163050100"),
]


@pytest.mark.parametrize("kw,golden", [spec[1:] for spec in GOLDEN_SPECS],
                         ids=[spec[0] for spec in GOLDEN_SPECS])
def test_golden_task_specs(kw, golden):
    spec = codec.TaskSpec(**kw)
    assert spec.encode().hex() == golden
    assert codec.dumps(spec).hex() == golden
    decoded = codec.TaskSpec.decode(bytes.fromhex(golden))
    assert decoded == spec
    for name, value in kw.items():
        assert same(getattr(decoded, name), value), name


GOLDEN_FRAMES = (
    "29000000080306067375626d69740510000102030405060708090a0b0c0d0e0f07038104"
    "00000000000004400006000000060470696e67010000008019000000090106056c656173"
    "650901060343505504000000000000f03f0200000007001f00000008030604646f6e6505"
    "14010101010101010101010101010101010101010102d500000008020604737065630a02"
    "0010000102030405060708090a0b0c0d0e0f040100000010020202020202020202020202"
    "020202021003030303030303030303030303030303140404040404040404040404040404"
    "040404040404106d796d6f64756c652e636f6d70757465000200000580054b012e010178"
    "140505050505050505050505050505050505050505011406060606060606060606060606"
    "06060606060606020203435055000000000000f03f03475055000000000000e03f060000"
    "0000000000000200000901060574726163650603616263"
)


def test_golden_frames():
    messages = [("submit", typical_spec_kwargs()["task_id"], [1, 2.5, None]), "ping", 0,
                {"lease": {"CPU": 1.0}}, [], ("done", b"\x01" * 20, True),
                ("spec", codec.TaskSpec(**typical_spec_kwargs()))]
    assert codec.pack_frames(messages).hex() == GOLDEN_FRAMES
    assert "".join(codec.pack_frame(m).hex() for m in messages) == GOLDEN_FRAMES
    assert codec.FrameReader().feed(bytes.fromhex(GOLDEN_FRAMES)) == messages
