"""rayx._core.codec and its pure-Python twin rayx._core.pycodec.

Every test that takes the ``codec`` fixture runs against both implementations;
tests named *_cross_* check that the two produce and accept the same bytes.
"""
import math
import pickle
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayx._core import codec as ccodec
from rayx._core import pycodec
from rayx._core.ids import ObjectID, TaskID
from rayx.exceptions import CodecError

IMPLS = [ccodec, pycodec]

INT64 = st.integers(-(2**63), 2**63 - 1)


@pytest.fixture(params=IMPLS, ids=["cython", "python"])
def codec(request):
    return request.param


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
        owner_address=st.text(max_size=30),
        runtime_env=st.binary(max_size=50),
        extra=st.dictionaries(st.text(max_size=8), json_like, max_size=4),
    ))


def typical_spec_kwargs():
    return dict(
        task_id=bytes(range(16)), job_id=b"\x01\x00\x00\x00", parent_task_id=b"\x02" * 16,
        caller_id=b"\x03" * 16, function_id=b"\x04" * 20, function_name="mymodule.compute",
        args=[(0, "", b"\x80\x05K\x01."), (1, "x", b"\x05" * 20)],
        nested_refs=[b"\x06" * 20], resources={"CPU": 1.0, "GPU": 0.5},
        owner_address="unix:/tmp/rayx/sock", extra={"trace": "abc"})


hsettings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------
# Generic messages

@pytest.mark.parametrize("value", [
    None, True, False, 0, 1, 127, 128, -1, -128, 2**31, 2**63 - 1, -(2**63),
    0.0, -0.0, 1.5, float("inf"), -float("inf"), 1e-300,
    b"", b"\x00\xff", "", "h\u00e9llo \u4e16\u754c \U0001f600", "\ud800 lone surrogate",
    [], (), {}, [1, [2, [3, (4,)]]], (1,), ((),), {"a": 1, 2: "b", (1, 2): [None], b"k": {}},
    {None: None, True: False, 1.5: -1.5},
])
def test_round_trip_values(codec, value):
    data = codec.dumps(value)
    assert isinstance(data, bytes)
    for form in (data, bytearray(data), memoryview(data)):
        assert same(codec.loads(form), value)


def test_nan_round_trips(codec):
    out = codec.loads(codec.dumps(float("nan")))
    assert math.isnan(out)


def test_bytes_like_in_bytes_out(codec):
    for v in (bytearray(b"abc"), memoryview(b"abc"), memoryview(b"xabcx")[1:4],
              memoryview(b"a0b0c0")[::2]):
        assert same(codec.loads(codec.dumps(v)), b"abc")
    assert same(codec.loads(codec.dumps([bytearray(b"x")])), [b"x"])


def test_subclasses_encode_as_base(codec):
    import enum

    class Color(enum.IntEnum):
        RED = 5

    class S(str):
        pass

    assert same(codec.loads(codec.dumps([Color.RED, S("x")])), [5, "x"])


def test_int_range(codec):
    for v in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(CodecError, match="64-bit"):
            codec.dumps(v)
        with pytest.raises(CodecError):
            codec.dumps([1, {"k": v}])


def test_unsupported_type(codec):
    for v in (object(), {1, 2}, 1j, [lambda: 0]):
        with pytest.raises(TypeError, match="cannot encode"):
            codec.dumps(v)


def test_depth_bound(codec):
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


def test_self_reference_is_bounded(codec):
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
    (b"\x0a\x02", "version"),
    (b"\x0a\x01\x03", "task_type"),
])
def test_malformed_messages(codec, data, match):
    with pytest.raises(CodecError, match=match):
        codec.loads(data)


def test_loads_rejects_non_buffers(codec):
    with pytest.raises(TypeError):
        codec.loads("not bytes")
    with pytest.raises(TypeError):
        codec.loads(None)


def test_loads_from(codec):
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
def test_hypothesis_round_trip(codec, value):
    data = codec.dumps(value)
    assert same(codec.loads(data), value)
    # Every strict prefix is a truncated value.
    for cut in sorted({0, len(data) // 2, len(data) - 1}):
        if cut < len(data):
            with pytest.raises(CodecError):
                codec.loads(data[:cut])
    with pytest.raises(CodecError, match="trailing"):
        codec.loads(data + b"\x00")


@hsettings
@given(value=values)
def test_cross_implementations_agree(value):
    data = ccodec.dumps(value)
    assert pycodec.dumps(value) == data
    assert same(pycodec.loads(data), value)


def _decode_or_codec_error(codec, data):
    try:
        codec.loads(data)
    except CodecError:
        pass


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_random_garbage(codec, data):
    _decode_or_codec_error(codec, data)
    _decode_or_codec_error(codec, b"\x0a\x01" + data)       # garbage that starts like a TaskSpec


@hsettings
@given(value=values, seed=st.integers(0, 2**32))
def test_bit_flips_and_truncation(codec, value, seed):
    data = bytearray(codec.dumps(value))
    rng = random.Random(seed)
    for _ in range(20):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(flipped))
            flipped[i] ^= 1 << rng.randrange(8)
        _decode_or_codec_error(codec, bytes(flipped))
        with pytest.raises(CodecError):
            codec.loads(bytes(data[:rng.randrange(len(data))]))


def test_exhaustive_truncation_and_flips_of_a_spec(codec):
    data = codec.TaskSpec(**typical_spec_kwargs()).encode()
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            codec.loads(data[:cut])
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            _decode_or_codec_error(codec, bytes(flipped))


# ---------------------------------------------------------------------------
# TaskSpec

def test_spec_defaults(codec):
    s = codec.TaskSpec()
    assert s.task_type == codec.NORMAL_TASK == 0
    assert (s.task_id, s.job_id, s.parent_task_id, s.caller_id, s.function_id) == (b"",) * 5
    assert (s.function_name, s.method_name, s.actor_name, s.namespace, s.owner_address) == ("",) * 5
    assert s.args == [] and s.nested_refs == [] and s.resources == {} and s.extra == {}
    assert s.num_returns == 1 and s.max_retries == 3 and s.attempt == 0
    assert s.retry_exceptions is False and s.strategy_soft is False
    assert s.detached is False and s.is_asyncio is False
    assert s.strategy == codec.STRATEGY_DEFAULT and s.strategy_node_id == b""
    assert (s.max_restarts, s.max_task_retries, s.max_concurrency) == (0, 0, 1)
    assert s.actor_id == b"" and s.sequence_number == 0 and s.runtime_env == b""
    # Containers are not shared between instances.
    t = codec.TaskSpec()
    s.args.append((0, "", b"x"))
    s.resources["CPU"] = 1.0
    assert t.args == [] and t.resources == {}
    assert (codec.ACTOR_CREATION_TASK, codec.ACTOR_TASK) == (1, 2)
    assert (codec.ARG_VALUE, codec.ARG_REF) == (0, 1)
    assert (codec.STRATEGY_SPREAD, codec.STRATEGY_NODE_AFFINITY) == (1, 2)


def test_spec_round_trip_typical(codec):
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


def test_spec_every_field_round_trips(codec):
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
        namespace="ns\u00e9", detached=True, is_asyncio=True, owner_address="tcp://[::1]:1234",
        runtime_env=b'{"env_vars": {}}', extra={"a": [1, (2, None)], "b": {"c": b"\x00"}},
    )
    s = codec.TaskSpec(**kw)
    t = codec.TaskSpec.decode(s.encode())
    for name, value in kw.items():
        assert same(getattr(t, name), value), name
    assert t == s


def test_spec_fields_are_writable(codec):
    s = codec.TaskSpec(**typical_spec_kwargs())
    s.attempt += 1
    s.function_name = "other.g"
    s.resources["memory"] = 1e9
    s.args.append((codec.ARG_REF, "", b"\x08" * 20))
    s.detached = True
    t = codec.TaskSpec.decode(s.encode())
    assert t.attempt == 1 and t.function_name == "other.g" and t.resources["memory"] == 1e9
    assert t.arg_refs() == [b"\x05" * 20, b"\x08" * 20] and t.detached is True


def test_spec_equality_and_copy(codec):
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


def test_spec_pickle_and_repr(codec):
    s = codec.TaskSpec(**typical_spec_kwargs())
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(s, protocol=proto)) == s
    r = repr(s)
    assert r.startswith("TaskSpec(") and "mymodule.compute" in r and bytes(range(16)).hex() in r
    assert "max_retries" not in r     # defaults are left out


def test_spec_return_ids_match_object_ids(codec):
    s = codec.TaskSpec(**typical_spec_kwargs(), num_returns=3)
    tid = TaskID(s.task_id)
    assert s.return_ids() == [ObjectID.for_return(tid, i).binary() for i in (1, 2, 3)]
    s.num_returns = 0
    assert s.return_ids() == []
    s.task_id = b"short"
    with pytest.raises(ValueError):
        s.return_ids()


def test_spec_arg_refs_and_shape_key(codec):
    s = codec.TaskSpec(args=[(0, "", b"v"), (1, "", b"a" * 20), (0, "k", b"w"), (1, "r", b"b" * 20)])
    assert s.arg_refs() == [b"a" * 20, b"b" * 20]
    assert s.shape_key() == ()
    s.resources = {"GPU": 1, "CPU": 2.0, "zero": 0}
    key = s.shape_key()
    assert key == (("CPU", 2.0), ("GPU", 1.0))
    assert hash(key) == hash(codec.TaskSpec(resources={"CPU": 2, "GPU": 1.0}).shape_key())
    assert codec.TaskSpec(resources={"CPU": 1}).shape_key() == (("CPU", 1.0),)


def test_spec_decode_rejects_non_specs(codec):
    with pytest.raises(CodecError, match="TaskSpec"):
        codec.TaskSpec.decode(codec.dumps([1, 2]))
    with pytest.raises(CodecError):
        codec.TaskSpec.decode(b"")


def test_spec_encode_validates(codec):
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


def test_cython_spec_attribute_types():
    s = ccodec.TaskSpec()
    with pytest.raises(TypeError):
        s.num_returns = "two"
    with pytest.raises(TypeError):
        s.task_id = "not bytes"
    with pytest.raises(OverflowError):
        s.attempt = 2**63
    with pytest.raises(TypeError):
        ccodec.TaskSpec(bogus=1)
    with pytest.raises(TypeError):
        ccodec.TaskSpec(task_id=None)
    s.task_id = None
    with pytest.raises(TypeError, match="task_id"):
        s.encode()


@hsettings
@given(kw=spec_kwargs())
def test_hypothesis_spec_round_trip(codec, kw):
    s = codec.TaskSpec(**kw)
    data = s.encode()
    t = codec.TaskSpec.decode(data)
    for name, value in kw.items():
        assert same(getattr(t, name), value), name
    assert t == s


@hsettings
@given(kw=spec_kwargs())
def test_cross_spec_bytes_agree(kw):
    data = ccodec.TaskSpec(**kw).encode()
    assert pycodec.TaskSpec(**kw).encode() == data
    assert pycodec.TaskSpec.decode(data) == pycodec.TaskSpec(**kw)


# ---------------------------------------------------------------------------
# Framing

MESSAGES = [("submit", typical_spec_kwargs()["task_id"], [1, 2.5, None]), "ping", 0, b"\x00" * 1000,
            {"lease": {"CPU": 1.0}}, [], ("done", b"\x01" * 20, True)]


def test_pack_frame_layout(codec):
    f = codec.pack_frame("hi")
    body = codec.dumps("hi")
    assert f == struct.pack("<I", len(body)) + body
    assert codec.pack_frames(["hi", "hi"]) == f + f
    assert codec.pack_frames([]) == b""


def test_frames_whole_and_bytewise(codec):
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
def test_frames_split_anywhere(codec, msgs, cuts):
    data = codec.pack_frames(msgs)
    points = sorted({c % (len(data) + 1) for c in cuts})
    r = codec.FrameReader()
    out, prev = [], 0
    for p in points + [len(data)]:
        out += r.feed(data[prev:p])
        prev = p
    assert len(out) == len(msgs) and all(same(a, b) for a, b in zip(out, msgs))
    assert r.buffered == 0


def test_frames_cross_implementations():
    data = ccodec.pack_frames(MESSAGES)
    assert pycodec.pack_frames(MESSAGES) == data
    assert pycodec.FrameReader().feed(data) == MESSAGES


def test_frame_too_large_breaks_reader(codec):
    r = codec.FrameReader(max_frame_size=100)
    assert r.feed(codec.pack_frame(b"x" * 50)) == [b"x" * 50]
    big = codec.pack_frame(b"x" * 200)
    with pytest.raises(CodecError, match="max_frame_size"):
        r.feed(big[:4])                 # the header alone is enough to refuse it
    assert r.broken
    with pytest.raises(CodecError, match="unusable"):
        r.feed(codec.pack_frame(1))


def test_frame_too_large_after_partial(codec):
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
def test_malformed_frame_breaks_reader(codec, bad):
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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(max_size=50), max_size=8))
def test_frame_reader_garbage(codec, chunks):
    r = codec.FrameReader(max_frame_size=1 << 16)
    for c in chunks:
        try:
            r.feed(c)
        except CodecError:
            break


def test_many_frames_one_chunk_and_big_frame_many_chunks(codec):
    n = 20000 if codec is ccodec else 2000
    data = codec.pack_frames([("t", i) for i in range(n)])
    out = codec.FrameReader().feed(data)
    assert len(out) == n and out[-1] == ("t", n - 1)
    big = codec.pack_frame(b"z" * (1 << 20))
    r = codec.FrameReader()
    out = []
    step = 1024 if codec is ccodec else 4096
    for i in range(0, len(big), step):
        out += r.feed(big[i:i + step])
    assert out == [b"z" * (1 << 20)]
