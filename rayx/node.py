"""Starting and stopping the processes of a node: GCS shards (head only) and the raylet.

``rayx.init()`` starts a node that lives as long as the driver (its processes
die with it); ``rayx start --head`` starts a detached one and records it in
``$RAYX_TMPDIR/cluster.json`` (default ``/tmp/rayx``) so that ``rayx.init()``,
``rayx status`` and ``rayx stop`` find it; the record counts while its session
is live (``rayx._private.sessions``). Everything a session writes (logs, the
AOF of the GCS shards, the raylet's socket, the cluster token) lives in its
session directory; the token file is readable by its owner only.

The raylet and the GCS shards run in sessions of their own (``setsid``), so the
signals a terminal sends the driver's process group (Ctrl-C, Ctrl-Z) never reach
them or the workers; the driver decides when they stop, and when it dies they
die with it (PR_SET_PDEATHSIG).
"""
import json
import logging
import os
import secrets
import select
import subprocess
import time

from rayx._private import sessions
from rayx._private.process import kill_pid, python_command, stop_process

logger = logging.getLogger("rayx")

ROOT_DIR = os.environ.get("RAYX_TMPDIR", "/tmp/rayx")
CLUSTER_FILE = os.path.join(ROOT_DIR, "cluster.json")


def default_num_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_object_store_memory():
    """30% of the machine's memory, bounded by what /dev/shm can hold."""
    import psutil
    memory = int(psutil.virtual_memory().total * 0.3)
    try:
        shm = os.statvfs("/dev/shm")
        memory = min(memory, int(shm.f_bavail * shm.f_frsize * 0.8))
    except OSError:
        pass
    return max(memory, 64 << 20)


def write_token(session_dir, token):
    path = os.path.join(session_dir, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return path


def sweep_stale_arenas():
    """Unlink /dev/shm/rayx-* arenas that no live process maps (their raylet was
    SIGKILLed before it could unlink them). Returns the paths removed."""
    try:
        names = [n for n in os.listdir("/dev/shm") if n.startswith("rayx-")]
    except OSError:
        return []
    if not names:
        return []
    mapped = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    if "/dev/shm/rayx-" in line:
                        mapped.add(line.rsplit("/", 1)[-1].strip())
        except OSError:
            continue
    removed = []
    for name in names:
        if name not in mapped:
            path = os.path.join("/dev/shm", name)
            try:
                if time.time() - os.stat(path).st_mtime > 5:   # not one being created now
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                pass
    return removed


def read_token(session_dir):
    with open(os.path.join(session_dir, "token")) as f:
        return f.read().strip()


def build_resources(num_cpus, num_gpus, resources, node_ip_address):
    total = {"CPU": float(default_num_cpus() if num_cpus is None else num_cpus)}
    if num_gpus:
        total["GPU"] = float(num_gpus)
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus / num_gpus instead of resources={{{name!r}: ...}}")
        if amount < 0:
            raise ValueError(f"resource {name!r} must not be negative, got {amount}")
        total[name] = float(amount)
    total[f"node:{node_ip_address}"] = 1.0
    return total


class Node:
    """The processes of one node started by this process."""

    def __init__(self, *, head=True, gcs_address=None, password=None, session_dir=None,
                 num_cpus=None, num_gpus=None, resources=None, object_store_memory=None,
                 node_ip_address="127.0.0.1", port=0, detached=False, num_data_shards=2, node_timeout_s=None,
                 allow_network=False):
        check_bind_address(node_ip_address, allow_network)
        self.head = head
        self.detached = detached
        self.node_ip_address = node_ip_address
        self.port = port
        self.num_data_shards = num_data_shards
        # Heartbeats silent this long mark a node dead (the head's monitor reads it).
        if node_timeout_s is None and os.environ.get("RAYX_NODE_TIMEOUT_S"):
            node_timeout_s = float(os.environ["RAYX_NODE_TIMEOUT_S"])
        if node_timeout_s is not None and not node_timeout_s > 0:
            raise ValueError(f"node_timeout_s must be a positive number of seconds, got {node_timeout_s!r}")
        self.node_timeout_s = node_timeout_s
        self.password = password or secrets.token_hex(16)
        self.gcs_address = gcs_address
        self.num_cpus = default_num_cpus() if num_cpus is None else num_cpus
        if self.num_cpus < 0:
            raise ValueError(f"num_cpus must be >= 0, got {num_cpus}")
        self.resources = build_resources(self.num_cpus, num_gpus, resources, node_ip_address)
        self.object_store_memory = int(object_store_memory or default_object_store_memory())
        # What tasks reserve with memory=... (bytes, as Ray): the machine's memory beyond the arena.
        import psutil
        self.resources.setdefault("memory", float(max(
            0, psutil.virtual_memory().available - self.object_store_memory)))
        # Held (and handed to the raylet and GCS shards) while the node runs: see sessions.
        if session_dir is None:
            self.session_dir, self._session_lock = sessions.create(ROOT_DIR)
        else:
            self.session_dir, self._session_lock = session_dir, sessions.hold(session_dir)
        self.shards = []
        self.raylet = None
        self.node_id = None
        self.socket_path = sessions.session_socket_path(self.session_dir, f"raylet-{secrets.token_hex(4)}.sock")
        self.arena_path = f"/dev/shm/rayx-{os.path.basename(self.session_dir)[-16:]}-{secrets.token_hex(4)}"

    def start(self, timeout=30.0):
        sweep_stale_arenas()
        if not is_loopback(self.node_ip_address):
            logger.warning(
                "rayx: this node listens on %s, reachable from other machines: %sthe raylet's gRPC "
                "port (tasks, objects). Calls carry the cluster token but are not encrypted.",
                self.node_ip_address, "the GCS shards (the primary on port %d), " % self.port if self.head else "")
        try:
            if self.head:
                write_token(self.session_dir, self.password)
                from rayx.gcs import start_gcs
                self.shards = start_gcs(os.path.join(self.session_dir, "gcs"), self.password,
                                        num_data_shards=self.num_data_shards, primary_port=self.port,
                                        host=self.node_ip_address, die_with_parent=not self.detached,
                                        pass_fds=(self._session_lock,))
                self.gcs_address = self.shards[0].address
            elif not os.path.exists(os.path.join(self.session_dir, "token")):
                write_token(self.session_dir, self.password)
            self._start_raylet(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_raylet(self, timeout):
        from rayx._core.ids import NodeID
        node_id = NodeID.from_random()
        config = {
            "node_id": node_id.hex(),
            "session_dir": self.session_dir,
            "socket_path": self.socket_path,
            "arena_path": self.arena_path,
            "object_store_memory": self.object_store_memory,
            "gcs_address": self.gcs_address,
            "password": self.password,
            "resources": self.resources,
            "num_workers": int(self.num_cpus),
            "node_ip_address": self.node_ip_address,
            "is_head": self.head,
            "die_with_parent": not self.detached,
            "node_timeout_s": self.node_timeout_s,
        }
        log = open(os.path.join(self.session_dir, "logs", "raylet.err"), "ab")
        self.raylet = subprocess.Popen(
            python_command("rayx.raylet.main"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True, close_fds=True, pass_fds=(self._session_lock,),
            env=dict(os.environ, RAYX_GCS_ADDRESS=self.gcs_address, RAYX_SESSION_DIR=self.session_dir),
        )
        log.close()
        # The config (it holds the cluster token) goes through a pipe, never argv, as one
        # line. A node that dies with this process keeps the pipe open: the raylet stops
        # when it reads the pipe's end, which comes when this process exits, however it
        # exits and whichever of its threads started the node.
        self.raylet.stdin.write(json.dumps(config).encode() + b"\n")
        self.raylet.stdin.flush()
        if self.detached:
            self.raylet.stdin.close()
        deadline = time.monotonic() + timeout
        line = b""
        fd = self.raylet.stdout.fileno()
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.raylet.poll() is not None:
                raise RuntimeError(f"the raylet did not start (see {self.session_dir}/logs/raylet.err)")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 256)
                if not chunk:
                    continue
                line += chunk
        self.raylet.stdout.close()
        if not line.startswith(b"READY"):
            raise RuntimeError(f"the raylet said {line!r} instead of READY")
        self.node_id = node_id.binary()

    def stop(self):
        if self.raylet is not None:
            stop_process(self.raylet, timeout=10)
            self._close_raylet_pipe()
            self.raylet = None
        if os.path.exists(self.arena_path):
            os.unlink(self.arena_path)
        if self.shards:
            from rayx.gcs import stop_gcs
            stop_gcs(self.shards)
            self.shards = []
        if self._session_lock is not None:
            sessions.release(self._session_lock)
            self._session_lock = None
            sessions.prune(ROOT_DIR)

    def kill(self):
        """SIGKILL the raylet, as a crash would (its workers die with it); then remove
        the files it would have removed. Only for a node without GCS shards."""
        if self.shards:
            raise ValueError("kill() is for nodes without GCS shards (not the head)")
        if self.raylet is not None:
            self.raylet.kill()
            self.raylet.wait()
            self._close_raylet_pipe()
            self.raylet = None
        for path in (self.arena_path, self.socket_path):
            if os.path.exists(path):
                os.unlink(path)
        self.stop()

    def _close_raylet_pipe(self):
        """The raylet's stdin, held open while it runs (see ``_start_raylet``)."""
        if self.raylet.stdin is not None and not self.raylet.stdin.closed:
            try:
                self.raylet.stdin.close()
            except OSError:
                pass

    def record(self):
        """What ``rayx stop``/``status`` and ``init(address="auto")`` need to find this node."""
        return {
            "gcs_address": self.gcs_address,
            "session_dir": self.session_dir,
            "raylet_socket": self.socket_path,
            "arena_path": self.arena_path,
            "node_ip_address": self.node_ip_address,
            "pids": [s.pid for s in self.shards] + ([self.raylet.pid] if self.raylet else []),
            "raylet_pid": self.raylet.pid if self.raylet else None,
        }


def is_loopback(address):
    """Whether ``address`` (an IP address or a host name) is on this machine only."""
    import ipaddress
    import socket
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind_address(address, allow_network):
    """A node listens on loopback unless told otherwise: any other address (a wildcard
    like 0.0.0.0 included) needs ``allow_network`` (``rayx start --allow-network``)."""
    if allow_network or is_loopback(address):
        return
    what = "every network interface" if address in ("0.0.0.0", "::", "") else f"the network at {address}"
    raise ValueError(f"node_ip_address {address!r} would expose this node's GCS and raylet ports on "
                     f"{what}; pass --allow-network (allow_network=True) to do that on purpose")


def read_cluster_file():
    try:
        with open(CLUSTER_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def live_cluster_record():
    """The record of the cluster ``rayx start`` runs on this machine, or None. A record
    whose session has ended (every process of it is gone) is deleted, not returned."""
    record = read_cluster_file()
    if record is None:
        return None
    if record.get("session_dir") and sessions.is_live(record["session_dir"]):
        return record
    _remove_cluster_file()
    return None


def _remove_cluster_file():
    try:
        os.unlink(CLUSTER_FILE)
    except OSError:
        pass


def check_reachable(address, timeout=5.0):
    """Raise ValueError for an address that is not HOST:PORT, ConnectionError naming
    it when nothing accepts connections there (before any token is asked for)."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"a cluster address is HOST:PORT (or 'auto', 'local'), got {address!r}")
    import socket
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"could not reach the rayx GCS at {address}: {exc.strerror or exc}; "
                              "is a head node (`rayx start --head`) running there?") from None


def write_cluster_file(record):
    sessions.secure_root(ROOT_DIR)
    fd = os.open(CLUSTER_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)


def stop_recorded_cluster():
    """Stop the node(s) recorded by ``rayx start``; returns how many processes were stopped."""
    record = live_cluster_record()   # None too when its processes are gone (their pids may be reused)
    if not record:
        return 0
    pids = []
    for node in record.get("nodes", []):
        pids.extend(node.get("pids", []))
    # Raylets first (they stop their workers and unlink their arenas), then the GCS.
    raylets = [n.get("raylet_pid") for n in record.get("nodes", []) if n.get("raylet_pid")]
    for pid in raylets:
        kill_pid(pid, timeout=10)
    for pid in pids:
        if pid not in raylets:
            kill_pid(pid)
    for node in record.get("nodes", []):
        arena = node.get("arena_path")
        if arena and os.path.exists(arena):
            os.unlink(arena)
    _remove_cluster_file()
    sessions.prune(ROOT_DIR)
    return len(pids)
