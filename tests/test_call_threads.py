"""CallThreads, the threads of a threaded actor: calls that block one another
still all run at once (up to the limit), never more than the limit run, and
shutdown runs what was queued."""
import threading
import time

from rayx.runtime.call_threads import CallThreads

from helpers import wait_for


def test_blocking_calls_run_side_by_side_up_to_the_limit():
    threads = CallThreads(4)
    barrier = threading.Barrier(4, timeout=30)
    passed = []
    for _ in range(4):
        threads.submit(lambda: passed.append(barrier.wait()))
    assert wait_for(lambda: len(passed) == 4, timeout=30)
    threads.shutdown()


def test_never_more_than_the_limit_at_once():
    threads = CallThreads(3)
    lock = threading.Lock()
    running = [0]
    peak = [0]
    done = []

    def call():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        done.append(1)

    for _ in range(30):
        threads.submit(call)
    assert wait_for(lambda: len(done) == 30, timeout=30)
    assert peak[0] <= 3
    threads.shutdown()


def test_a_stream_of_short_calls_and_shutdown_runs_the_queue():
    threads = CallThreads(16)
    results = []
    for i in range(5000):
        threads.submit(results.append, i)
    threads.shutdown(wait=True)
    assert sorted(results) == list(range(5000))
