"""Small helpers shared by test modules (importable because pytest puts this
directory on sys.path, as it does for conftest.py)."""
import contextlib
import time

import psutil

from rayx.gcs import start_gcs, stop_gcs


def wait_for(predicate, timeout=30):
    """Poll ``predicate`` every 50 ms until it returns a true value or ``timeout``
    passes; that value, or its last one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def connections(process, kind):
    """``process``'s sockets of ``kind``: psutil 6 renamed ``connections`` to
    ``net_connections``; the declared range starts before the rename."""
    method = getattr(process, "net_connections", None) or process.connections
    return method(kind)


def assert_gone(pids):
    """Fail if any of ``pids`` still exists (a zombie counts: nobody reaped it)."""
    for pid in pids:
        if psutil.pid_exists(pid):
            try:
                status = psutil.Process(pid).status()
            except psutil.NoSuchProcess:
                continue
            raise AssertionError("GCS process %d still exists (%s)" % (pid, status))


@contextlib.contextmanager
def running_gcs(data_dir, password, **kwargs):
    """Real GCS shards (``start_gcs(data_dir, password, **kwargs)``) for the block;
    then stopped, and none of their processes may be left (a shard restarted in
    the block counts with its first pid and its last)."""
    shards = start_gcs(str(data_dir), password, **kwargs)
    pids = {s.pid for s in shards}
    try:
        yield shards
    finally:
        pids.update(s.pid for s in shards if s.pid)
        stop_gcs(shards)
    assert_gone(pids)
