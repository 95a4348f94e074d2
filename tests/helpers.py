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
