"""A node's life and its scheduler: resources, crashes and retries, clean
shutdown, and drivers joining a node started by ``rayx start``."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import rayx
from conftest import HeadNode
from helpers import wait_for
from rayx.exceptions import WorkerCrashedError
from rayx.scripts.cli import format_status
from rayx.gcs import tables
from rayx.runtime import context


def test_shutdown_leaves_nothing_behind(shutdown_only):
    rayx.init(num_cpus=2, object_store_memory=128 << 20)
    node = rayx.runtime.context.started_node()
    arena_path, socket_path = node.arena_path, node.socket_path

    @rayx.remote
    def pid():
        return os.getpid()

    worker_pids = set(rayx.get([pid.remote() for _ in range(10)]))
    children = psutil.Process().children(recursive=True)
    assert children, "init() should have started processes"
    assert os.path.exists(arena_path) and os.path.exists(socket_path)
    rayx.shutdown()
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"still running after shutdown: {alive}"
    for p in worker_pids:
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(arena_path) and not os.path.exists(socket_path)


def test_init_twice(shutdown_only):
    rayx.init(num_cpus=1, object_store_memory=64 << 20)
    with pytest.raises(RuntimeError, match="twice"):
        rayx.init(num_cpus=1)
    rayx.init(ignore_reinit_error=True)
    assert rayx.is_initialized()


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=1)], indirect=True)
def test_nested_get_with_one_cpu(rayx_fresh):
    @rayx.remote
    def leaf(x):
        return x * 2

    @rayx.remote
    def middle(x):
        return rayx.get(leaf.remote(x)) + 1

    @rayx.remote
    def top(x):
        return rayx.get([middle.remote(x), middle.remote(x + 1)])

    assert rayx.get(top.remote(1), timeout=120) == [3, 5]


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=2, num_gpus=2, resources={"accel": 1})],
                         indirect=True)
def test_resources_and_gpu_ids(rayx_fresh):
    assert rayx.cluster_resources()["CPU"] == 2
    assert rayx.cluster_resources()["GPU"] == 2
    assert rayx.cluster_resources()["accel"] == 1

    @rayx.remote(num_gpus=1)
    def gpu_task():
        time.sleep(0.5)
        return os.environ.get("CUDA_VISIBLE_DEVICES"), rayx.get_gpu_ids()

    results = rayx.get([gpu_task.remote(), gpu_task.remote()])
    assert sorted(r[0] for r in results) == ["0", "1"]
    assert sorted(r[1][0] for r in results) == [0, 1]

    @rayx.remote(num_gpus=0.5)
    def half():
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    assert rayx.get(half.remote()) in ("0", "1")

    @rayx.remote(resources={"accel": 1}, num_cpus=0)
    def exclusive(seconds):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    spans = sorted(rayx.get([exclusive.remote(0.3) for _ in range(3)]))
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.05, "tasks needing the single 'accel' unit overlapped"


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=2)], indirect=True)
def test_fractional_cpus_run_together(rayx_fresh, tmp_path):
    @rayx.remote(num_cpus=0.5)
    def meet(path, n):
        # Each task registers, then waits until all n have registered: this only
        # finishes if 4 tasks of 0.5 CPU run at once on 2 CPUs.
        with open(os.path.join(path, str(os.getpid())), "w"):
            pass
        deadline = time.time() + 60
        while len(os.listdir(path)) < n and time.time() < deadline:
            time.sleep(0.01)
        return len(os.listdir(path))

    assert rayx.get([meet.remote(str(tmp_path), 4) for _ in range(4)], timeout=90) == [4, 4, 4, 4]


@pytest.mark.parametrize("rayx_fresh", [dict(num_cpus=1)], indirect=True)
def test_resources_returned_after_errors_and_crashes(rayx_fresh):
    @rayx.remote(max_retries=0)
    def die():
        os._exit(1)

    @rayx.remote
    def bad():
        raise ValueError("x")

    with pytest.raises(WorkerCrashedError):
        rayx.get(die.remote(), timeout=60)
    with pytest.raises(ValueError):
        rayx.get(bad.remote(), timeout=60)

    @rayx.remote
    def ok():
        return "ok"

    assert rayx.get(ok.remote(), timeout=60) == "ok"
    assert wait_for(lambda: rayx.available_resources().get("CPU") == 1, timeout=10)


def test_worker_crash_retries_then_fails(rayx_start, tmp_path):
    counter = tmp_path / "runs"

    @rayx.remote(max_retries=2)
    def crash(path):
        with open(path, "a") as f:
            f.write("x")
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(WorkerCrashedError) as info:
        rayx.get(crash.remote(str(counter)), timeout=120)
    assert counter.read_text() == "xxx"   # 1 run + 2 retries
    message = str(info.value)
    assert "crash" in message and "pid=" in message and "node=" in message


def test_worker_crash_then_success_on_retry(rayx_start, tmp_path):
    marker = tmp_path / "crashed"

    @rayx.remote(max_retries=1)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(3)
        return "second time lucky"

    assert rayx.get(crash_once.remote(str(marker)), timeout=120) == "second time lucky"


def test_segfault_is_a_worker_crash(rayx_start):
    @rayx.remote(max_retries=0)
    def segfault():
        import ctypes
        ctypes.string_at(0)

    with pytest.raises(WorkerCrashedError):
        rayx.get(segfault.remote(), timeout=60)


def test_infeasible_task_is_reported_not_hung(rayx_start, capfd):
    @rayx.remote(resources={"unobtainium": 1})
    def never():
        return 1

    ref = never.remote()
    ready, _ = rayx.wait([ref], timeout=1)
    assert not ready
    err = []

    def warned():
        err.append(capfd.readouterr().err)
        return "unobtainium" in "".join(err)
    assert wait_for(warned, timeout=10)
    assert "no node" in "".join(err)
    assert wait_for(lambda: "unobtainium" in format_status(list(tables.NODES.scan(context.gcs()).values())), timeout=10)


def test_rayx_start_and_second_driver(head_node):
    assert len(head_node.started) >= 4   # 3 GCS shards, a raylet, its workers
    status = head_node.cli("status")
    assert "CPU" in status.stdout and "0/2 CPU" in status.stdout
    driver = """
        import rayx
        rayx.init(address="auto")

        @rayx.remote
        def square(x):
            return x * x

        print("RESULT", sum(rayx.get([square.remote(i) for i in range(10)])))
        rayx.shutdown()
    """
    for _ in range(2):  # two drivers, one after the other, share the cluster
        out = head_node.run_driver(driver)
        assert "RESULT 285" in out.stdout, out.stderr


def test_init_without_address_joins_the_running_cluster(head_node):
    """Ray's order: address argument, RAY(X)_ADDRESS, the cluster `rayx start` runs here,
    else a new local one; resources are not given when joining."""
    record = json.loads(head_node.record_path.read_text())
    out = head_node.run_driver("""
        import pytest
        import rayx

        ctx = rayx.init()
        assert rayx.runtime.context.started_node() is None, "init() started a cluster of its own"
        print("SESSION", ctx.address_info["session_dir"])

        @rayx.remote
        def square(x):
            return x * x

        print("RESULT", rayx.get(square.remote(7)))
        rayx.shutdown()
        with pytest.raises(ValueError, match="must not be given"):
            rayx.init(num_cpus=2)
        ctx = rayx.init(address="local", num_cpus=1, object_store_memory=64 << 20)
        assert rayx.runtime.context.started_node() is not None
        print("LOCAL", ctx.address_info["session_dir"])
        rayx.shutdown()
    """)
    assert "RESULT 49" in out.stdout, out.stderr
    assert f"SESSION {record['session_dir']}" in out.stdout
    assert "LOCAL" in out.stdout and f"LOCAL {record['session_dir']}" not in out.stdout


def test_a_dead_cluster_record_is_ignored_and_removed(head_node):
    record_text = head_node.record_path.read_text()
    assert not head_node.stop()
    head_node.record_path.write_text(record_text)    # as if its processes had been SIGKILLed
    out = head_node.run_driver("""
        import rayx
        rayx.init(num_cpus=1, object_store_memory=64 << 20)
        assert rayx.runtime.context.started_node() is not None
        print("RESULT", rayx.get(rayx.put(5)))
        rayx.shutdown()
    """)
    assert "RESULT 5" in out.stdout, out.stderr
    assert not head_node.record_path.exists()


def test_an_unreachable_address_is_named(tmp_path):
    node = HeadNode(tmp_path)
    out = node.cli("start", "--address", "127.0.0.1:1", check=False)
    assert out.returncode != 0
    assert "127.0.0.1:1" in out.stderr and "RAYX_CLUSTER_TOKEN" not in out.stderr, out.stderr
    out = node.run_driver("""
        import pytest
        import rayx
        with pytest.raises(ConnectionError, match="127.0.0.1:1"):
            rayx.init(address="127.0.0.1:1")
        print("OK", rayx.is_initialized())
    """)
    assert "OK False" in out.stdout, out.stderr


def test_listening_beyond_loopback_needs_allow_network(tmp_path):
    from rayx.node import Node, is_loopback
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.3") and is_loopback("localhost") \
        and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("::")
    with pytest.raises(ValueError, match="every network interface.*--allow-network"):
        Node(node_ip_address="0.0.0.0")
    env = dict(os.environ, RAYX_TMPDIR=str(tmp_path / "rx"))
    out = subprocess.run([sys.executable, "-m", "rayx", "start", "--head", "--node-ip-address", "0.0.0.0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "every network interface" in out.stderr and "--allow-network" in out.stderr
    assert not os.path.exists(tmp_path / "rx" / "cluster.json")
