"""Errors raised in tasks and actor calls: what the caller gets (the remote
traceback with file, line and source; the exception's own data), whatever
cloudpickle writes for code and however the exception class is built."""
import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

import rayx
from rayx import serialization
from rayx.exceptions import RayTaskError


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
        from rayx import serialization
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
