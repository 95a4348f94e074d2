"""Fixtures that start real rayx nodes (GCS shards, a raylet, workers) and make
sure every process and arena file they started is gone afterwards.

The test run gets a RAYX_TMPDIR of its own (inside the one set outside, if any),
removed at the end, so session directories never pile up; it is set before rayx
is imported (rayx.node reads it at import) and child processes inherit it.

After every test that leaves no rayx session connected, the counters of the
compiled core must balance in this (the driver's) process: every ObjectBuffer
pinned was released, every view of one released, every Arena handle opened was
unmapped, every ObjectRef made was freed (``debug_counters()`` of
rayx._core.store and rayx._core.objectref).
"""
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

_OUTER_TMPDIR = os.environ.get("RAYX_TMPDIR")
if _OUTER_TMPDIR:
    os.makedirs(_OUTER_TMPDIR, exist_ok=True)
RUN_TMPDIR = tempfile.mkdtemp(prefix="rayx-tests-", dir=_OUTER_TMPDIR)
os.environ["RAYX_TMPDIR"] = RUN_TMPDIR

import rayx  # noqa: E402  (after RAYX_TMPDIR is set)
from rayx._core import objectref as core_objectref  # noqa: E402
from rayx._core import store as core_store  # noqa: E402

BALANCED_COUNTERS = [("buffers_pinned", "buffers_released"), ("views_exported", "views_released"),
                     ("arenas_opened", "arenas_unmapped"), ("refs_made", "refs_freed")]


def pytest_unconfigure(config):
    shutil.rmtree(RUN_TMPDIR, ignore_errors=True)


def unbalanced_counters():
    counts = {**core_store.debug_counters(), **core_objectref.debug_counters()}
    return {f"{made} - {ended}": counts[made] - counts[ended]
            for made, ended in BALANCED_COUNTERS if counts[made] != counts[ended]}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item.call_failed = outcome.get_result().failed


@pytest.fixture(autouse=True)
def core_counters_balance(request):
    """Once no session is connected, nothing of the compiled core is left held
    (collecting garbage first if something is: cycles may hold buffers). Not
    checked after a failed test, whose traceback still holds its locals."""
    yield
    if getattr(request.node, "call_failed", False):
        return
    if rayx.is_initialized() or not unbalanced_counters():
        return
    gc.collect()
    left = unbalanced_counters()
    assert not left, f"left held after the test (made - ended): {left}"


def rayx_processes():
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "rayx.raylet.main" in cmdline or "rayx.worker_main" in cmdline:
            found.append(proc.info["pid"])
    return found


@pytest.fixture(scope="module")
def rayx_start():
    """A one-node cluster (2 CPUs, 512 MiB arena) shared by a test module."""
    rayx.init(num_cpus=2, object_store_memory=512 << 20)
    yield rayx
    rayx.shutdown()


@pytest.fixture
def rayx_fresh(request):
    """A new cluster per test; ``request.param`` may hold init kwargs."""
    kwargs = dict(num_cpus=2, object_store_memory=256 << 20)
    kwargs.update(getattr(request, "param", {}) or {})
    rayx.init(**kwargs)
    yield rayx
    rayx.shutdown()


@pytest.fixture
def shutdown_only():
    yield None
    rayx.shutdown()


def arena_files():
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith("rayx-"))


class HeadNode:
    """A cluster started with ``rayx start --head`` in its own RAYX_TMPDIR."""

    def __init__(self, tmp_path):
        self.env = dict(os.environ, RAYX_TMPDIR=str(tmp_path / "rx"))
        self.cwd = str(tmp_path)
        self.record_path = tmp_path / "rx" / "cluster.json"
        self.started = []

    def cli(self, *args, check=True):
        return subprocess.run([sys.executable, "-m", "rayx.scripts.cli", *args], env=self.env,
                              timeout=120, capture_output=True, text=True, check=check)

    def start(self):
        self.cli("start", "--head", "--port", "0", "--num-cpus", "2",
                 "--object-store-memory", str(128 << 20))
        record = json.loads(self.record_path.read_text())
        self.started = [pid for node in record["nodes"] for pid in node["pids"]]
        self.started += [c.pid for pid in self.started for c in psutil.Process(pid).children(recursive=True)]
        return self

    def run_driver(self, source, timeout=120):
        """Run ``source`` as a separate driver process; its CompletedProcess."""
        return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], env=self.env,
                              timeout=timeout, capture_output=True, text=True, cwd=self.cwd)

    def stop(self):
        self.cli("stop", check=False)
        deadline = time.time() + 15
        while any(psutil.pid_exists(pid) for pid in self.started) and time.time() < deadline:
            time.sleep(0.1)
        return [pid for pid in self.started if psutil.pid_exists(pid)]


@pytest.fixture
def head_node(tmp_path):
    """``rayx start --head`` in a temp dir; stopped afterwards, with a check that every
    process it started is gone."""
    node = HeadNode(tmp_path)
    try:
        yield node.start()
    finally:
        left = node.stop()
    assert not left, f"processes left after `rayx stop`: {left}"
