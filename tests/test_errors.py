"""Errors raised in tasks and actor calls: what the caller gets (the remote
traceback with file, line and source; the exception's own data), whatever
cloudpickle writes for code and however the exception class is built."""
import hashlib
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import rayx
from rayx.runtime import serialization
from rayx.exceptions import RayTaskError, TaskCancelledError, UnserializableException


def _compile_file(path, source):
    """Write ``source`` to ``path`` and run it as a module that workers cannot import
    (so its functions are pickled by value); its namespace."""
    path.write_text(textwrap.dedent(source))
    namespace = {"__name__": "rayx_test_shipped_" + path.stem}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


SHIPPED = """
    def divide(a, b):
        x = a + 1
        return a / b

    def outer(n):
        def inner(k):
            raise KeyError(k * 2)
        return inner(n)
"""


def test_code_keeps_its_file_name_and_function_id_is_stable(tmp_path):
    ns = _compile_file(tmp_path / "shipped.py", SHIPPED)
    blob = serialization.dumps_function(ns["outer"])
    assert blob == serialization.dumps_function(ns["outer"])
    fn = serialization.loads_function(blob)
    assert fn.__code__.co_filename == str(tmp_path / "shipped.py")
    nested = [c for c in fn.__code__.co_consts if hasattr(c, "co_filename")]
    assert nested and all(c.co_filename == str(tmp_path / "shipped.py") for c in nested)
    # Another process pickling the same code gets the same bytes (the same function id).
    script = f"""
        import hashlib, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_errors import _compile_file
        import pathlib
        from rayx.runtime import serialization
        ns = _compile_file(pathlib.Path({str(tmp_path / "shipped.py")!r}), {SHIPPED!r})
        print(hashlib.sha1(serialization.dumps_function(ns["outer"])).hexdigest())
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip()
    assert out == hashlib.sha1(blob).hexdigest()


def test_remote_traceback_names_file_line_and_source(rayx_start, tmp_path):
    path = tmp_path / "divide_mod.py"
    ns = _compile_file(path, SHIPPED)
    divide = rayx.remote(ns["divide"])
    with pytest.raises(ZeroDivisionError) as info:
        rayx.get(divide.remote(1, 0), timeout=60)
    text = str(info.value)
    assert isinstance(info.value, RayTaskError)
    assert f'File "{path}", line 4, in divide' in text
    assert "return a / b" in text


def test_source_shows_where_the_file_cannot_be_read(rayx_start, tmp_path):
    path = tmp_path / "gone_mod.py"
    ns = _compile_file(path, SHIPPED)
    outer = rayx.remote(ns["outer"])
    with pytest.raises(KeyError):
        rayx.get(outer.remote(1), timeout=60)     # exported while the file exists
    path.unlink()                                 # no node can read it now
    with pytest.raises(KeyError) as info:
        rayx.get(outer.remote(2), timeout=60)
    text = str(info.value)
    assert f'File "{path}", line 8, in inner' in text
    assert "raise KeyError(k * 2)" in text
    assert "return inner(n)" in text


# ------------------------------------------------------------ the exception's data

class CodeError(Exception):
    code = 0

    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code


class KeywordOnlyError(Exception):
    def __init__(self, *, code, detail="none"):
        super().__init__(f"code={code}")
        self.code = code
        self.detail = detail


class LockedError(Exception):
    """Its pickling fails in the worker (a lock among its attributes)."""

    def __init__(self, message):
        super().__init__(message)
        self.code = 3
        self.lock = threading.Lock()


def _no_rebuild(*args):
    raise RuntimeError("this exception cannot be rebuilt")


class RebuildFailsError(Exception):
    """Pickles in the worker, fails to unpickle at the caller."""

    def __reduce__(self):
        return (_no_rebuild, self.args)


@rayx.remote(max_retries=0)
def raise_it(kind):
    if kind == "code":
        raise CodeError("bad code", code=7)
    if kind == "keyword":
        raise KeywordOnlyError(code=5, detail="kw")
    if kind == "locked":
        raise LockedError("locked out")
    raise RebuildFailsError("cannot come back")


@rayx.remote
class Raiser:
    def call(self, kind):
        return _raise_here(kind)


def _raise_here(kind):
    if kind == "keyword":
        raise KeywordOnlyError(code=9, detail="actor")
    raise CodeError("actor code", code=11)


def test_exception_attributes_reach_the_caller(rayx_start):
    with pytest.raises(CodeError) as info:
        rayx.get(raise_it.remote("code"), timeout=60)
    err = info.value
    assert isinstance(err, RayTaskError)
    assert err.code == 7 and err.cause.code == 7
    assert err.args == ("bad code",)
    assert 'raise CodeError("bad code", code=7)' in str(err)


def test_keyword_only_exception_is_rebuilt_with_its_traceback(rayx_start):
    with pytest.raises(KeywordOnlyError) as info:
        rayx.get(raise_it.remote("keyword"), timeout=60)
    err = info.value
    assert isinstance(err, RayTaskError)
    assert (err.code, err.detail, err.args) == (5, "kw", ("code=5",))
    assert 'raise KeywordOnlyError(code=5, detail="kw")' in str(err)


def test_keyword_only_exception_defined_in_the_driver(rayx_start):
    class LocalError(Exception):           # pickled by value
        def __init__(self, *, where):
            super().__init__(f"at {where}")
            self.where = where

    @rayx.remote
    def fail():
        raise LocalError(where="worker")

    with pytest.raises(LocalError) as info:
        rayx.get(fail.remote(), timeout=60)
    assert info.value.where == "worker" and info.value.args == ("at worker",)
    assert 'raise LocalError(where="worker")' in str(info.value)


def test_actor_method_errors_keep_their_data(rayx_start):
    actor = Raiser.remote()
    with pytest.raises(KeywordOnlyError) as info:
        rayx.get(actor.call.remote("keyword"), timeout=60)
    assert (info.value.code, info.value.detail) == (9, "actor")
    assert 'raise KeywordOnlyError(code=9, detail="actor")' in str(info.value)
    with pytest.raises(CodeError) as info:
        rayx.get(actor.call.remote("code"), timeout=60)
    assert info.value.code == 11
    rayx.kill(actor)


def test_exception_that_cannot_be_pickled_in_the_worker(rayx_start):
    with pytest.raises(LockedError) as info:
        rayx.get(raise_it.remote("locked"), timeout=60)
    err = info.value
    assert err.code == 3 and err.args == ("locked out",)
    assert not hasattr(err, "lock")
    text = str(err)
    assert 'raise LockedError("locked out")' in text
    assert "lock of the LockedError could not be pickled" in text


def test_exception_that_cannot_be_rebuilt_at_the_caller(rayx_start):
    with pytest.raises(UnserializableException) as info:
        rayx.get(raise_it.remote("rebuild"), timeout=60)
    err = info.value
    assert isinstance(err, RayTaskError)
    text = str(err)
    assert 'raise RebuildFailsError("cannot come back")' in text
    assert "RebuildFailsError: cannot come back" in text
    assert "could not be rebuilt here: RuntimeError: this exception cannot be rebuilt" in text
    assert "RebuildFailsError: cannot come back" in err.cause.original_stack_trace


def test_rayx_errors_keep_their_fields():
    error = TaskCancelledError("abc123", "The task f was cancelled before it ran")
    back = serialization.deserialize(serialization.serialize_error(error).to_bytes()).error
    assert back.task_id == "abc123" and str(back) == "The task f was cancelled before it ran"
