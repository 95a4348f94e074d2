"""Values to bytes and back: cloudpickle for code, pickle protocol 5 for data.

A serialized object is one contiguous byte layout that can live inline in a
message (small values) or in the node's shared-memory arena (large ones):

    byte 0      kind: VALUE (a pickled value) or ERROR (a pickled exception
                that ``get`` raises instead of returning)
    byte 1      0: the rest is the in-band pickle, nothing else (small values)
                1: out-of-band buffers follow the header below
    [if 1]      u32 buffer count, u64 in-band length,
                then (u64 offset, u64 length) per buffer,
                then the in-band pickle, then each buffer at a 64-byte
                aligned offset from the start of the object.

Buffers (numpy arrays and anything exposing the buffer protocol) are copied
exactly once, into their final place; reading them back hands pickle slices of
the source memoryview, so an array read from the arena is zero-copy and, since
the arena view is read-only, read-only.

ObjectRefs and actor handles met while pickling are recorded in the active
``SerializationContext`` so the runtime can keep the objects they name alive
for as long as the outer object lives (refs nested in objects).

Code pickled by value keeps its real file name (cloudpickle 3.1.3 writes
"<dynamic-code>" instead), and an exported function or class carries the
source lines of its code, which the worker that loads it hands to
``linecache``: remote tracebacks name the file and show the line even on a
node that cannot read the file.
"""
import collections
import copyreg
import inspect
import io
import linecache
import pickle
import struct
import threading
import types

import cloudpickle

from rayx.exceptions import RayError, RayTaskError, UnserializableException
from rayx._core.objectref import install_runtime

KIND_VALUE = 0
KIND_ERROR = 1

_FLAT = 0
_WITH_BUFFERS = 1

_ALIGN = 64
_HEADER = struct.Struct("<BBIQ")       # kind, layout, buffer count, in-band length
_BUFFER_ENTRY = struct.Struct("<QQ")   # offset, length
_SIMPLE_TYPES = (int, float, str, bytes, bool, type(None))

_context = threading.local()


def _round_up(n):
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


class SerializedObject:
    """A value ready to be written inline or into the arena."""

    __slots__ = ("kind", "inband", "buffers", "nested_refs", "size", "_offsets")

    def __init__(self, kind, inband, buffers, nested_refs):
        self.kind = kind
        self.inband = inband
        self.buffers = buffers
        self.nested_refs = nested_refs
        if not buffers:
            self._offsets = ()
            self.size = 2 + len(inband)
        else:
            header = _HEADER.size + _BUFFER_ENTRY.size * len(buffers)
            pos = _round_up(header + len(inband))
            offsets = []
            for buf in buffers:
                offsets.append(pos)
                pos = _round_up(pos + buf.nbytes)
            self._offsets = offsets
            self.size = offsets[-1] + buffers[-1].nbytes

    def to_bytes(self):
        """The whole layout as one bytes object (for values sent inline)."""
        if not self.buffers:
            return bytes((self.kind, _FLAT)) + self.inband
        out = bytearray(self.size)
        self.write_into(memoryview(out))
        return bytes(out)

    def write_into(self, dest):
        """Write the layout into ``dest``, a writable buffer of at least ``size`` bytes."""
        dest = memoryview(dest).cast("B")
        if not self.buffers:
            dest[0] = self.kind
            dest[1] = _FLAT
            dest[2:2 + len(self.inband)] = self.inband
            return
        _HEADER.pack_into(dest, 0, self.kind, _WITH_BUFFERS, len(self.buffers), len(self.inband))
        pos = _HEADER.size
        for offset, buf in zip(self._offsets, self.buffers):
            _BUFFER_ENTRY.pack_into(dest, pos, offset, buf.nbytes)
            pos += _BUFFER_ENTRY.size
        dest[pos:pos + len(self.inband)] = self.inband
        for offset, buf in zip(self._offsets, self.buffers):
            dest[offset:offset + buf.nbytes] = buf


class SerializationContext:
    """Collects the ids of ObjectRefs (and the handles of actors) pickled inside a value."""

    __slots__ = ("nested_refs", "actor_handles", "_previous")

    def __init__(self):
        self.nested_refs = []
        self.actor_handles = []

    def __enter__(self):
        self._previous = getattr(_context, "current", None)
        _context.current = self
        return self

    def __exit__(self, *exc):
        _context.current = self._previous
        return False


def current_context():
    """The SerializationContext of the value being pickled on this thread, or None."""
    return getattr(_context, "current", None)


install_runtime(current_context=current_context)   # ObjectRef.__reduce__ records nested refs


# ------------------------------------------------------------ code objects

_cloudpickle_code_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _reduce_code(code):
    """cloudpickle's reduction of a code object, with the code's real file name."""
    rebuild, args = _cloudpickle_code_reduce(code)
    # A new string each time, as cloudpickle does: memoization of shared strings
    # would make the bytes depend on string identity, and the function id is
    # their sha1.
    return _rebuild_code, (rebuild, args, "".join(code.co_filename))


def _rebuild_code(rebuild, args, filename):
    code = rebuild(*args)
    return code if code.co_filename == filename else code.replace(co_filename=filename)


def _reduce_task_error(error):
    """A RayTaskError whose cause travels as bytes of its own (``dumps_exception``): a
    cause that cannot be pickled, or rebuilt by the caller, must not take the
    traceback down with it."""
    cause, note = (None, "") if error.cause is None else dumps_exception(error.cause)
    return (_rebuild_task_error, (error.function_name, error.traceback_str + note, cause,
                                  error.pid, error.ip))


def _rebuild_task_error(function_name, traceback_str, cause, pid, ip):
    if cause is not None:
        cause, note = loads_exception(cause, traceback_str)
        traceback_str += note
    return RayTaskError.rebuilt(function_name, traceback_str, cause, pid, ip)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, keeping the file names of the code it pickles by value, and
    reducing RayTaskErrors with ``_reduce_task_error`` (the class itself here; its
    classes derived with a cause's class in ``_ErrorPickler``, through which every
    task error is pickled)."""

    # cloudpickle's table with entries added, no deeper than it (it is looked up
    # for every object whose class pickle does not know).
    _own, *_rest = getattr(cloudpickle.Pickler.dispatch_table, "maps", [cloudpickle.Pickler.dispatch_table])
    dispatch_table = collections.ChainMap(
        {**_own, types.CodeType: _reduce_code, RayTaskError: _reduce_task_error}, *_rest)
    del _own, _rest


class _FunctionPickler(_Pickler):
    """Also records the code objects it pickles (their source goes with the export)."""

    def __init__(self, file):
        super().__init__(file, protocol=5)
        self.code_objects = []

    def reducer_override(self, obj):
        if type(obj) is types.CodeType:
            self.code_objects.append(obj)
            return _reduce_code(obj)
        return super().reducer_override(obj)


def _dumps(value, pickler_class=_Pickler, buffer_callback=None):
    with io.BytesIO() as file:
        pickler_class(file, protocol=5, buffer_callback=buffer_callback).dump(value)
        return file.getvalue()


def serialize(value):
    """Serialize a value. Raises TypeError naming the value's type if it cannot be pickled."""
    if type(value) in _SIMPLE_TYPES:
        return SerializedObject(KIND_VALUE, pickle.dumps(value, 5), (), ())
    buffers = []
    with SerializationContext() as ctx:
        try:
            inband = _dumps(value, buffer_callback=buffers.append)
        except Exception as exc:
            raise TypeError(f"Could not serialize {_describe(value)}: {exc}") from exc
    return SerializedObject(KIND_VALUE, inband, [_flat(b) for b in buffers], ctx.nested_refs)


def _flat(pickle_buffer):
    """A contiguous byte view of an out-of-band buffer (copied only if it is not contiguous)."""
    try:
        return pickle_buffer.raw()
    except BufferError:
        return memoryview(bytes(memoryview(pickle_buffer)))


def serialize_error(exc):
    """Serialize an exception that ``get`` will raise. Never fails: an exception
    that cannot be pickled is replaced by a RayError carrying its text."""
    try:
        inband = _dumps(exc, _ErrorPickler)
    except Exception as pickling_error:
        inband = pickle.dumps(RayError(f"{type(exc).__name__}: {_text(exc)} (the exception could "
                                       f"not be pickled: {pickling_error})"), 5)
    return SerializedObject(KIND_ERROR, inband, (), ())


# ------------------------------------------------------------ exceptions

def _rebuild_exception(cls, args, state):
    """An exception of ``cls`` with these ``args`` and attributes, made without calling
    its ``__init__`` (which may want other arguments than ``args``, keyword-only ones...)."""
    try:
        exc = cls.__new__(cls, *args)
    except TypeError:           # a __new__ of its own that wants other arguments
        exc = cls.__new__(cls)
    exc.args = args
    if state:
        exc.__setstate__(state)
    return exc


def _reduces_by_default(cls):
    return (cls.__reduce__ is BaseException.__reduce__ and cls.__reduce_ex__ is object.__reduce_ex__
            and cls not in copyreg.dispatch_table)


class _ErrorPickler(_Pickler):
    """Pickles exceptions (the ones that do not say how) as class + args + attributes,
    so that rebuilding one never calls its ``__init__``; and RayTaskErrors, whatever
    class derived from it, with ``_reduce_task_error``."""

    def reducer_override(self, obj):
        if isinstance(obj, BaseException):
            if isinstance(obj, RayTaskError):
                return _reduce_task_error(obj)
            if _reduces_by_default(type(obj)):
                return _rebuild_exception, (type(obj), obj.args, getattr(obj, "__dict__", None) or None)
        return super().reducer_override(obj)


def dumps_exception(exc):
    """Pickle a user's exception for the caller: (bytes, note). Never fails: attributes
    (and arguments) that cannot be pickled are left out, and the note says which; an
    exception that cannot be pickled at all becomes an UnserializableException."""
    try:
        return _dumps(exc, _ErrorPickler), ""
    except Exception as error:
        problem = f"{type(error).__name__}: {error}"
    state = {}
    dropped = []
    for name, value in (getattr(exc, "__dict__", None) or {}).items():
        if _picklable(value):
            state[name] = value
        else:
            dropped.append(name)
    args = tuple(arg if _picklable(arg) else repr(arg) for arg in exc.args)
    if args != exc.args:
        dropped.append("args (sent as their repr)")
    try:
        data = _dumps(_rebuild_exception(type(exc), args, state), _ErrorPickler)
        return data, (f"\n(rayx: {', '.join(dropped)} of the {type(exc).__name__} could not be "
                      f"pickled and {'were' if len(dropped) > 1 else 'was'} left out: {problem})")
    except Exception:
        pass
    note = f"\n(rayx: the {type(exc).__name__} could not be pickled: {problem})"
    return pickle.dumps(UnserializableException(f"{type(exc).__name__}: {_text(exc)}{note}"), 5), note


def loads_exception(data, traceback_str):
    """The exception of ``dumps_exception``: (exception, note). One that cannot be rebuilt
    here becomes an UnserializableException carrying ``traceback_str``."""
    try:
        return pickle.loads(data), ""
    except Exception as error:
        note = f"\n(rayx: the exception could not be rebuilt here: {type(error).__name__}: {error})"
        return UnserializableException(traceback_str + note), note


def _picklable(value):
    try:
        _dumps(value, _ErrorPickler)
        return True
    except Exception:
        return False


def _text(exc):
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose str() failed>"


def _describe(value):
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} object {text}"


class ErrorValue:
    """What ``deserialize`` returns for an ERROR object: the exception to raise."""

    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


def deserialize(data):
    """Rebuild a value from its layout. Buffers stay views of ``data`` (zero-copy).

    Returns an ErrorValue wrapping the exception for objects of kind ERROR.
    """
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if len(view) < 2:
        raise ValueError("serialized object is truncated")
    kind = view[0]
    if view[1] == _FLAT:
        value = pickle.loads(view[2:])
    else:
        _, _, count, inband_len = _HEADER.unpack_from(view, 0)
        pos = _HEADER.size
        buffers = []
        for _ in range(count):
            offset, length = _BUFFER_ENTRY.unpack_from(view, pos)
            pos += _BUFFER_ENTRY.size
            buffers.append(view[offset:offset + length])
        value = pickle.loads(view[pos:pos + inband_len], buffers=buffers)
    if kind == KIND_ERROR:
        return ErrorValue(value)
    return value


def dumps_function(fn):
    """Pickle a function or class by value (cloudpickle), for the function table: the
    pickle of ``fn``, then (when any is known) a pickle of its source lines,
    {file name: {line number: line}}. The same code gives the same bytes (the
    function id is their sha1)."""
    with io.BytesIO() as file:
        pickler = _FunctionPickler(file)
        pickler.dump(fn)
        sources = _source_lines(pickler.code_objects)
        if sources:
            pickle.dump(sources, file, 5)
        return file.getvalue()


def loads_function(data):
    """The function or class of ``dumps_function``; its source lines go to ``linecache``."""
    with io.BytesIO(data) as file:
        fn = pickle.load(file)
        if file.tell() < len(data):
            _remember_source_lines(pickle.load(file))
    return fn


def _source_lines(code_objects):
    sources = {}
    for code in code_objects:
        lines = sources.setdefault(code.co_filename, {})
        if code.co_firstlineno in lines:
            continue        # nested in code already read
        try:
            block, start = inspect.getsourcelines(code)
        except (OSError, TypeError, IndexError, SyntaxError):
            continue        # no source (interactive input, -c, or a file gone)
        for number, line in enumerate(block, max(start, 1)):
            lines[number] = line
    return {name: lines for name, lines in sources.items() if lines}


def _remember_source_lines(sources):
    """Put shipped source lines into ``linecache`` (over what this node's copy of the
    file says, if it has one), for good: entries without an mtime are never dropped."""
    for filename, lines in sources.items():
        current = linecache.getlines(filename)
        if all(number <= len(current) and current[number - 1] == line
               for number, line in lines.items()):
            entry = linecache.cache.get(filename)
            if entry is not None and len(entry) == 4 and entry[1] is None:
                continue    # known (or seeded before) and right
        merged = list(current)
        last = max(lines)
        if len(merged) < last:
            merged.extend(["\n"] * (last - len(merged)))
        for number, line in lines.items():
            merged[number - 1] = line
        linecache.cache[filename] = (sum(map(len, merged)), None, merged, filename)
