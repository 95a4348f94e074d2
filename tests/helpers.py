"""Small helpers shared by test modules (importable because pytest puts this
directory on sys.path, as it does for conftest.py)."""
import time


def wait_for(predicate, timeout=30):
    """Poll ``predicate`` every 50 ms until it is true or ``timeout`` passes; its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def connections(process, kind):
    """``process``'s sockets of ``kind``: psutil 6 renamed ``connections`` to
    ``net_connections``; the declared range starts before the rename."""
    method = getattr(process, "net_connections", None) or process.connections
    return method(kind)
