# Build of rayx's compiled core: every rayx/_core/*.pyx becomes one extension
# module. C++ sources a module needs are named in the .pyx itself with a
# "# distutils: sources = ..." line, so this file keeps no list in sync by hand.
# RAYX_DEBUG=1 builds without optimisation, with C asserts and Cython bounds
# checks, and makes the arena run its full validate() after every committed
# section (cpp/arena.cc). The counters of pins, views, arenas and refs
# (debug_counters() of rayx._core.store and .objectref) exist in every build.
# The gRPC stubs of rayx/protos/*.proto are generated here too (grpcio-tools
# is a build requirement), so no generated file is committed.
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RAYX_DEBUG") == "1"


def generate_grpc_stubs():
    from grpc_tools import protoc
    for proto in sorted(glob.glob("rayx/protos/*.proto")):
        status = protoc.main(["protoc", "-I.", "--python_out=.", "--grpc_python_out=.", proto])
        if status != 0:
            raise RuntimeError(f"protoc failed on {proto}")


generate_grpc_stubs()

compile_args = ["-std=c++17", "-Wall", "-Wno-unused-function"]
macros = []
if DEBUG:
    compile_args += ["-O0", "-g", "-DRAYX_DEBUG=1"]
    macros.append(("RAYX_DEBUG", "1"))
else:
    compile_args += ["-O3", "-DNDEBUG"]

extensions = [
    Extension(
        "rayx._core." + os.path.splitext(os.path.basename(path))[0],
        [path],
        language="c++",
        include_dirs=["cpp", "rayx/_core"],
        extra_compile_args=compile_args,
        extra_link_args=["-lpthread", "-lrt"],
        define_macros=macros,
    )
    for path in sorted(glob.glob("rayx/_core/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": DEBUG, "wraparound": False},
    ),
)
