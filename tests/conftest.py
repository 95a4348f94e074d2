"""Fixtures that start real rayx nodes (GCS shards, a raylet, workers) and make
sure every process and arena file they started is gone afterwards."""
import os

import psutil
import pytest

import rayx


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
