"""The processes rayx starts, seen from a driver in another process: they ignore the
driver's terminal signals, die with the driver however it dies (and leave no arena
or socket files behind), and import the same rayx as the driver whatever the
working directory holds."""
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from helpers import connections, wait_for

REAL_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A driver that starts a node, runs a task and an actor call, says READY with its
# arena path, then waits for a line on stdin before running them again.
DRIVER = """
    import os, signal, sys
    {prelude}
    import rayx
    rayx.init(num_cpus=1, object_store_memory=64 << 20)

    @rayx.remote
    def add(a, b):
        return a + b

    @rayx.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    counter = Counter.remote()
    assert rayx.get(add.remote(1, 2)) == 3 and rayx.get(counter.incr.remote()) == 1
    print("READY", rayx.runtime.context.started_node().arena_path, flush=True)
    sys.stdin.readline()
    print("RESULT", rayx.get(add.remote(2, 3)), rayx.get(counter.incr.remote()), flush=True)
    rayx.shutdown()
"""


def running(proc):
    """Alive and not a zombie (a dead child its parent has not reaped yet)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Driver:
    """A driver process in its own process group (as a shell runs a command)."""

    def __init__(self, tmp_path, prelude="", cwd=None):
        source = textwrap.dedent(DRIVER).format(prelude=prelude)
        env = dict(os.environ, RAYX_TMPDIR=str(tmp_path / "rx"))
        self.proc = subprocess.Popen([sys.executable, "-c", source], cwd=cwd or str(tmp_path), env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.kill()
            raise AssertionError(f"driver did not start: {line!r} {self.proc.stderr.read()}")
        self.arena_path = line.split()[1]
        self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def socket_files(self):
        paths = set()
        for child in self.children:
            try:
                paths.update(c.laddr for c in connections(child, "unix") if c.laddr)
            except psutil.NoSuchProcess:
                pass
        return paths

    def finish(self):
        return self.proc.communicate("go\n", timeout=120)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        psutil.wait_procs(self.children, timeout=60)


def test_terminal_sigint_to_the_driver_group_spares_rayx_processes(tmp_path):
    driver = Driver(tmp_path, prelude="signal.signal(signal.SIGINT, signal.SIG_IGN)")
    try:
        assert len(driver.children) >= 5      # 3 GCS shards, the raylet, a worker
        os.killpg(driver.proc.pid, signal.SIGINT)   # Ctrl-C in the driver's terminal
        # Give a process that would die of it the time to die.
        wait_for(lambda: not all(running(c) for c in driver.children), timeout=3)
        assert all(running(c) for c in driver.children), "a rayx process died of the driver's SIGINT"
        out, err = driver.finish()
        assert "RESULT 5 2" in out, err
        assert driver.proc.returncode == 0, err
        gone, alive = psutil.wait_procs(driver.children, timeout=60)
        assert not alive, f"still running after the driver exited: {alive}"
    finally:
        driver.kill()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_driver_death_stops_everything_and_removes_its_files(tmp_path, sig):
    driver = Driver(tmp_path)
    try:
        sockets = driver.socket_files()
        assert any("raylet-" in p for p in sockets) and any("worker-" in p for p in sockets), sockets
        assert os.path.exists(driver.arena_path)
        driver.proc.send_signal(sig)
        driver.proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(driver.children, timeout=60)
        assert not alive, f"still running after the driver died: {alive}"
        left = [p for p in sockets | {driver.arena_path} if os.path.exists(p)]
        assert not left, f"left behind after the driver died of {sig!r}: {left}"
    finally:
        driver.kill()


def test_children_import_the_drivers_rayx_not_the_one_in_the_cwd(tmp_path):
    """A working directory holding another (say unbuilt) rayx tree, as the checkout
    root after a non-editable install; user modules there stay importable by tasks."""
    cwd = tmp_path / "project"
    (cwd / "rayx").mkdir(parents=True)
    (cwd / "rayx" / "__init__.py").write_text('raise ImportError("wrong rayx")\n')
    (cwd / "usermod.py").write_text("VALUE = 40\n")
    driver = Driver(tmp_path, prelude=f"sys.path.insert(0, {REAL_ROOT!r})", cwd=str(cwd))
    try:
        out, err = driver.finish()
        assert "RESULT 5 2" in out, err
    finally:
        driver.kill()
    source = f"""
        import sys
        sys.path.insert(0, {REAL_ROOT!r})
        import rayx
        rayx.init(num_cpus=1, object_store_memory=64 << 20)

        @rayx.remote
        def user_value():
            import usermod
            return usermod.VALUE + 2

        print("VALUE", rayx.get(user_value.remote()))
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], cwd=str(cwd), timeout=120,
                         env=dict(os.environ, RAYX_TMPDIR=str(tmp_path / "rx")),
                         capture_output=True, text=True)
    assert "VALUE 42" in out.stdout, out.stderr


def test_a_node_started_from_a_thread_outlives_the_thread():
    """The raylet stops when the process that started it exits, not when the thread
    that started it does (a parent-death signal would follow the thread)."""
    import threading

    import rayx
    from rayx.cluster_utils import Cluster

    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1)
        cluster.connect()
        added = []
        thread = threading.Thread(target=lambda: added.append(cluster.add_node(num_cpus=1)))
        thread.start()
        thread.join(timeout=120)
        [node] = added
        pid = node.raylet.pid
        assert not wait_for(lambda: not psutil.pid_exists(pid) or
                            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=3)
        alive = {n["NodeID"]: n["Alive"] for n in rayx.nodes()}
        assert alive[node.node_id.hex()] is True
    finally:
        cluster.shutdown()
