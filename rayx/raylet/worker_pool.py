"""The raylet's worker processes: starting them (a warm pool of at least
``min_workers`` task workers), tracking them, forwarding their output, and
forgetting them when they die.

Workers are plain Python processes running ``rayx.worker_main``; they connect
back to the raylet's socket and register with the id they were started with.
Their stdout and stderr are pipes read by the raylet's event loop; each line
is written to the worker's log file and forwarded to the drivers prefixed
with the task or actor it came from, as ``(name pid=123) text``.
"""
import collections
import os
import signal
import subprocess

from rayx._core.ids import WorkerID
from rayx._private.process import python_command

IDLE = 0
BUSY = 1
ACTOR = 2
STARTING = 3
DEAD = 4
EXITING = 5     # exits on its own (max_calls reached): takes no more work, is no crash


class Worker:
    __slots__ = ("worker_id", "process", "pid", "conn", "state", "task", "allocation",
                 "blocked_cpus", "actor_id", "log_file", "display_name", "job_id",
                 "partial_line", "direct_path", "queued", "lease_holder")

    def __init__(self, worker_id, process, log_file):
        self.worker_id = worker_id
        self.process = process
        self.pid = process.pid
        self.conn = None
        self.state = STARTING
        self.task = None             # the task it runs now
        self.queued = collections.deque()   # tasks sent to run after it (pipelining)
        self.allocation = None
        self.blocked_cpus = 0
        self.actor_id = b""
        self.log_file = log_file
        self.display_name = None
        self.job_id = b""
        self.partial_line = {1: b"", 2: b""}   # per stream: output after its last newline
        self.direct_path = ""       # where it takes direct calls and leased tasks
        self.lease_holder = None    # the connection of the caller it is leased to


class WorkerPool:
    """Starts and tracks workers; ``on_output(worker, stream, text)`` receives their
    prefixed lines."""

    def __init__(self, loop, socket_path, session_dir, min_workers, on_output):
        self.loop = loop
        self.socket_path = socket_path
        self.session_dir = session_dir
        self.min_workers = min_workers
        self.on_output = on_output
        self.workers = {}        # worker id -> Worker
        self.idle = []           # idle task workers, most recently used last
        self.starting = 0
        self.closed = False      # the node stops: no more workers, deaths are expected

    def start_worker(self):
        worker_id = WorkerID.from_random().binary()
        log_path = os.path.join(self.session_dir, "logs", f"worker-{worker_id.hex()[:12]}.log")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["RAYX_WORKER_ID"] = worker_id.hex()
        env["RAYX_RAYLET_SOCKET"] = self.socket_path
        env["RAYX_RAYLET_PID"] = str(os.getpid())
        process = subprocess.Popen(
            python_command("rayx.worker_main"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, close_fds=True,
        )
        log_file = open(log_path, "ab", buffering=0)
        worker = Worker(worker_id, process, log_file)
        self.workers[worker_id] = worker
        self.starting += 1
        for stream, pipe in ((1, process.stdout), (2, process.stderr)):
            os.set_blocking(pipe.fileno(), False)
            self.loop.add_reader(pipe.fileno(), self._read_output, worker, stream, pipe)
        return worker

    def _read_output(self, worker, stream, pipe):
        try:
            data = os.read(pipe.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(pipe.fileno())
            pipe.close()
            tail = worker.partial_line[stream]
            if tail:
                worker.partial_line[stream] = b""
                self._emit(worker, stream, tail)
            return
        worker.log_file.write(data)
        data = worker.partial_line[stream] + data
        cut = data.rfind(b"\n")
        if cut < 0:
            worker.partial_line[stream] = data
            return
        worker.partial_line[stream] = data[cut + 1:]
        self._emit(worker, stream, data[:cut])

    def _emit(self, worker, stream, data):
        name = worker.display_name or "worker"
        prefix = f"({name} pid={worker.pid}) "
        text = "\n".join(prefix + line for line in data.decode("utf-8", "replace").split("\n"))
        self.on_output(worker, stream, text)

    def registered(self, worker_id, conn):
        worker = self.workers.get(worker_id)
        if worker is None:
            return None
        worker.conn = conn
        self.starting -= 1
        worker.state = IDLE
        return worker

    def pop_idle(self):
        idle = self.idle
        while idle:
            worker = idle.pop()
            if worker.state == IDLE:
                return worker
        return None

    def push_idle(self, worker):
        worker.state = IDLE
        worker.task = None
        worker.allocation = None
        worker.display_name = None
        self.idle.append(worker)

    def keep_minimum(self):
        """Start task workers until ``min_workers`` exist (not once the pool is closed)."""
        if self.closed:
            return
        for _ in range(self.min_workers - self.count_task_workers()):
            self.start_worker()

    def remove(self, worker):
        """Forget a worker that died: close its log, remove its socket, reap its process."""
        if worker.state == STARTING:
            self.starting -= 1
        worker.state = DEAD
        self.workers.pop(worker.worker_id, None)
        try:
            self.idle.remove(worker)
        except ValueError:
            pass
        try:
            worker.log_file.close()
        except Exception:
            pass
        _unlink_socket(worker)
        try:
            worker.process.wait(timeout=1.0)
        except Exception:
            pass

    def reap_exited(self):
        """Workers whose process exited before they ever registered."""
        dead = []
        for worker in list(self.workers.values()):
            if worker.state == STARTING and worker.process.poll() is not None:
                dead.append(worker)
        return dead

    def count_task_workers(self):
        return sum(1 for w in self.workers.values() if w.state in (IDLE, BUSY, STARTING) and not w.actor_id)

    def kill_all(self, timeout=2.0):
        """The node stops: close the pool, end every worker, remove their sockets."""
        self.closed = True
        procs = [w.process for w in self.workers.values()]
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
        for worker in self.workers.values():
            _unlink_socket(worker)


def _unlink_socket(worker):
    """A worker that was killed leaves its socket file behind."""
    if worker.direct_path:
        try:
            os.unlink(worker.direct_path)
        except OSError:
            pass
