"""The threads of a threaded actor (``max_concurrency`` > 1): up to that many
calls run at once, each on its own thread, in arrival order.

Lighter than a ThreadPoolExecutor for a stream of short calls: a call is a
tuple appended to a deque, and a sleeping thread is woken only when no thread
is free to take it; a thread that ends a call takes the next one without
sleeping. So a burst of short calls is run by the threads already awake, not
handed from thread to thread (each hand-off costs a wake-up and a GIL switch).
"""
import collections
import threading


class CallThreads:
    def __init__(self, max_threads, name="rayx-actor"):
        self.max_threads = max_threads
        self.name = name
        self._calls = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._threads = []
        self._idle = 0           # threads waiting for a call
        self._free = 0           # threads not running a call (idle, or about to take one)
        self._closed = False

    def submit(self, fn, *args):
        with self._cond:
            if self._closed:
                raise RuntimeError("the actor's threads are shut down")
            self._calls.append((fn, args))
            if self._free - self._idle >= len(self._calls):
                return                   # threads between two calls will take it
            if self._idle:
                self._cond.notify()
            elif len(self._threads) < self.max_threads:
                self._start_thread()

    def _start_thread(self):
        thread = threading.Thread(target=self._run, name=f"{self.name}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        self._free += 1
        thread.start()

    def _run(self):
        cond = self._cond
        calls = self._calls
        cond.acquire()
        try:
            while True:
                while not calls:
                    if self._closed:
                        self._free -= 1
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                fn, args = calls.popleft()
                self._free -= 1
                cond.release()
                try:
                    fn(*args)
                except BaseException:   # the call reports its own errors; keep the thread
                    pass
                cond.acquire()          # one lock round per call: free again, take the next
                self._free += 1
        finally:
            cond.release()

    def shutdown(self, wait=True):
        """Run what is queued, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for thread in list(self._threads):
                if thread is not threading.current_thread():
                    thread.join()
