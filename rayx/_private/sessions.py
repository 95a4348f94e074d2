"""Session directories under RAYX_TMPDIR: making them, telling live ones from
ended ones, and keeping only a bounded number of ended ones.

Every node start that is not joining an existing session (``rayx.init()``,
``rayx start --head``, ``Cluster``) makes ``session_<date>_<time>_<microseconds>_<pid>``
(logs, GCS files, sockets, token), as Ray names them: names sort by age.

A session is *live* while some process holds a shared ``flock`` on its
``lock`` file. The process that makes the session takes the lock on one open
file description and hands that descriptor to the raylet and the GCS shards it
starts (``pass_fds``); a node joining the session takes a lock of its own. The
kernel drops a lock when the last process holding it exits, however it exits,
so there is no pid file to go stale and no pid reuse to fool the check.

Policy (at every node start and stop, and ``rayx stop``): ended sessions beyond the newest ``kept()``
(``RAYX_KEEP_SESSIONS``, default 8) are deleted, oldest first; a live session
is never deleted. ``session_latest`` is a symlink to the newest session.
A new session is built under a hidden name and renamed once locked, so a
cleaner never sees it unlocked.

The root itself must be this user's and writable by nobody else
(``secure_root``): sessions hold the cluster token, sockets and logs, and
another user able to write there could plant or swap them.
"""
import datetime
import fcntl
import os
import secrets
import pwd
import shutil
import stat

PREFIX = "session_"
LATEST = "session_latest"
LOCK_FILE = "lock"
DEFAULT_KEPT = 8
_BUILDING = ".building_session_"


def kept():
    """How many ended sessions to keep (``RAYX_KEEP_SESSIONS``, default 8)."""
    value = os.environ.get("RAYX_KEEP_SESSIONS", "")
    if not value:
        return DEFAULT_KEPT
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"RAYX_KEEP_SESSIONS must be a whole number >= 0, got {value!r}")
    return number


def secure_root(root):
    """Make ``root`` (mode 0700) if missing; refuse one that another user owns or that
    group or others may write (PermissionError naming the problem)."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    info = os.stat(root)
    if info.st_uid != os.geteuid():
        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = "?"
        raise PermissionError(
            f"the rayx temp root {root} belongs to user {owner} (uid {info.st_uid}), not to you: "
            f"set RAYX_TMPDIR to a directory of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"the rayx temp root {root} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            f"run `chmod go-w {root}` or set RAYX_TMPDIR to a directory only you can write")


def create(root):
    """A new session dir under ``root``, locked; returns (path, lock descriptor).
    Prunes ended sessions and points ``session_latest`` at the new one."""
    secure_root(root)
    name = f"{PREFIX}{datetime.datetime.now().strftime('%Y-%m-%d_%H-%M-%S_%f')}_{os.getpid()}"
    building = os.path.join(root, _BUILDING + name)
    os.mkdir(building, 0o700)
    for sub in ("logs", "sockets", "gcs"):
        os.mkdir(os.path.join(building, sub))
    fd = _lock(building)
    path = os.path.join(root, name)
    os.rename(building, path)
    _point_latest(root, name)
    prune(root)
    return path, fd


def hold(session_dir):
    """Take a shared lock on an existing session (a node joining it); its descriptor."""
    return _lock(session_dir)


def release(fd):
    if fd is not None:
        os.close(fd)


def is_live(session_dir):
    """True while some process holds the session's lock."""
    try:
        fd = os.open(os.path.join(session_dir, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def prune(root, keep=None):
    """Delete ended sessions beyond the newest ``keep``; returns the paths deleted."""
    keep = kept() if keep is None else keep
    try:
        names = sorted((n for n in os.listdir(root) if n.startswith(PREFIX) and n != LATEST),
                       reverse=True)
    except OSError:
        return []
    deleted = []
    ended = 0
    for name in names:
        path = os.path.join(root, name)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        fd = _try_exclusive(path)
        if fd is None:
            continue                      # live
        try:
            ended += 1
            if ended > keep:
                shutil.rmtree(path, ignore_errors=True)
                deleted.append(path)
        finally:
            os.close(fd)
    return deleted


def _lock(session_dir):
    fd = os.open(os.path.join(session_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)    # waits only while a cleaner checks it
    return fd


def _try_exclusive(session_dir):
    """The lock held exclusively (the session has ended), or None while it is live.
    A session without a lock file (made by an older rayx) counts as ended."""
    try:
        fd = os.open(os.path.join(session_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _point_latest(root, name):
    link = os.path.join(root, LATEST)
    tmp = f"{link}.{secrets.token_hex(4)}"
    os.symlink(name, tmp)
    os.replace(tmp, link)


def session_socket_path(session_dir, name):
    """A Unix socket path in the session, or in /tmp when that would pass the 107-byte limit."""
    path = os.path.join(session_dir, "sockets", name)
    return path if len(path) < 100 else os.path.join("/tmp", "rayx-" + name)
