"""Runs the C++ arena tests (cpp/tests, built by cpp/Makefile) from pytest.

`make -C cpp test` builds a debug build under AddressSanitizer/UBSan (when
available) and a release build, and runs the same tests on both.
"""
import os
import shutil
import subprocess

import pytest

CPP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cpp")


@pytest.mark.skipif(shutil.which("make") is None or shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="needs make and a C++ compiler")
def test_cpp_arena_tests_pass():
    result = subprocess.run(["make", "-C", CPP_DIR, "test"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=850)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "0 failed" in result.stdout
