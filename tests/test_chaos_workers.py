"""Chaos on one node: a thread SIGKILLs a worker every 0.5 s while the driver
runs thousands of short tasks, or calls an actor that restarts forever; every
result must still be right (or, for an actor without task retries, be the
documented ActorDiedError), and once the session shuts down nothing of it may
be left: no process it started, no arena file in /dev/shm.

Only processes this test's own raylet started are killed (children of that
raylet, found through psutil, never by name across the machine), so suites
running beside this one are untouched. The leftover check reuses
ci/check_leftovers.py, restricted to this session's processes and arena.
"""
import importlib.util
import os
import random
import signal
import threading
import time

import numpy as np
import psutil
import pytest

import rayx
from helpers import wait_for
from rayx.exceptions import ActorDiedError
from rayx.runtime import context
from rayx.util.state import get_actor

pytestmark = pytest.mark.timeout(240)

_CHECK_LEFTOVERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "ci", "check_leftovers.py")
_spec = importlib.util.spec_from_file_location("check_leftovers", _CHECK_LEFTOVERS)
check_leftovers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_leftovers)

BIG = 30_000            # int64s: 240 KB, above the 100 KiB inline limit, so stored in the arena
KILL_INTERVAL_S = 0.5


def _alive(proc):
    """Running and not a zombie (psutil's is_running also checks the pid was not reused)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Session:
    """A one-node session started by this test, and every process of it seen so far."""

    def __init__(self):
        rayx.init(num_cpus=2, object_store_memory=256 << 20)
        node = context.started_node()
        self.raylet = psutil.Process(node.raylet.pid)
        self.procs = {self.raylet.pid: self.raylet}
        self.procs.update((s.pid, psutil.Process(s.pid)) for s in node.shards)
        # Arenas are /dev/shm/rayx-<last 16 chars of the session dir>-<random>.
        self.arena_prefix = f"/dev/shm/rayx-{os.path.basename(node.session_dir)[-16:]}-"
        assert node.arena_path.startswith(self.arena_prefix)
        self.workers()

    def workers(self):
        """The raylet's live worker processes (remembered for the leftover check)."""
        found = []
        try:
            children = self.raylet.children()
        except psutil.NoSuchProcess:
            return found
        for child in children:
            try:
                if "rayx.worker_main" in " ".join(child.cmdline()) and _alive(child):
                    self.procs.setdefault(child.pid, child)
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        return found

    def zombie_workers(self):
        zombies = []
        try:
            children = self.raylet.children()
        except psutil.NoSuchProcess:
            return zombies
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    zombies.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return zombies

    def leftovers(self):
        """What ci/check_leftovers.py finds of this session, plus any process of it
        still running whatever its command line now says."""
        ours = set()
        for item in check_leftovers.current():
            if item.startswith("process "):
                pid = int(item.split()[1].rstrip(":"))
                if pid in self.procs and _alive(self.procs[pid]):
                    ours.add(item)
            elif item.startswith(self.arena_prefix):
                ours.add(item)
        for pid, proc in self.procs.items():
            if _alive(proc) and not any(item.startswith(f"process {pid}:") for item in ours):
                ours.add(f"process {pid} (still running)")
        return sorted(ours)

    def shutdown_and_check(self):
        rayx.shutdown()
        # The raylet kills its workers as it stops; give them time to go on a busy box.
        wait_for(lambda: not self.leftovers(), timeout=30)
        left = self.leftovers()
        assert not left, f"left behind by the session: {left}"


class Killer(threading.Thread):
    """Every ``interval`` seconds SIGKILLs the process ``pick()`` returns (None: skip)."""

    def __init__(self, pick, interval=KILL_INTERVAL_S):
        super().__init__(daemon=True)
        self.pick = pick
        self.interval = interval
        self.stopping = threading.Event()
        self.killed = []
        self.error = None

    def run(self):
        try:
            while not self.stopping.wait(self.interval):
                proc = self.pick()
                if proc is None:
                    continue
                try:
                    proc.send_signal(signal.SIGKILL)     # psutil refuses a reused pid
                    self.killed.append(proc.pid)
                except psutil.NoSuchProcess:
                    pass
        except BaseException as e:      # reported by stop()
            self.error = e

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return len(self.killed)


@pytest.fixture
def session():
    s = Session()
    try:
        yield s
    finally:
        if rayx.is_initialized():
            s.shutdown_and_check()


@rayx.remote(max_retries=20)
def square(i):
    time.sleep(0.01)
    if i % 10 == 0:
        return np.full(BIG, i, dtype=np.int64)
    return i * i


def check_squares(values):
    for i, value in enumerate(values):
        if i % 10 == 0:
            assert value.shape == (BIG,) and int(value[0]) == i and int(value[-1]) == i, i
        else:
            assert value == i * i, (i, value)


def test_tasks_survive_a_worker_killed_every_half_second(session):
    killer = Killer(lambda: random.choice(session.workers() or [None]))
    killer.start()
    try:
        refs = [square.remote(i) for i in range(2000)]
        values = rayx.get(refs, timeout=180)
    finally:
        kills = killer.stop()
    check_squares(values)
    # 2,000 tasks of 10 ms on 2 CPUs take at least 10 s: many turns of the killer.
    assert kills >= 3, kills
    del values, refs
    # The node is still whole: a full set of workers, and the dead ones reaped.
    check_squares(rayx.get([square.remote(i) for i in range(50)], timeout=60))
    assert wait_for(lambda: len(session.workers()) >= 2)
    assert wait_for(lambda: not session.zombie_workers()), session.zombie_workers()


@rayx.remote
class Doubler:
    def __init__(self, offset):
        self.offset = offset
        self.calls = 0

    def double(self, i):
        time.sleep(0.005)
        self.calls += 1
        return 2 * i + self.offset, os.getpid()


@rayx.remote(max_retries=20)
def call_from_task(actor, start, count):
    return [v for v, _ in rayx.get([actor.double.remote(start + j) for j in range(count)], timeout=120)]


def _actor_killer(session, handle):
    actor_id = handle._ray_actor_id.hex()

    def pick():
        record = get_actor(actor_id)
        pid = record and record["pid"]
        # Only the actor's current worker, and only if our raylet started it.
        return next((w for w in session.workers() if w.pid == pid), None)

    return Killer(pick)


def test_restarting_actor_called_while_its_worker_is_killed(session):
    actor = Doubler.options(max_restarts=-1, max_task_retries=-1).remote(rayx.put(7))
    assert rayx.get(actor.double.remote(0), timeout=60)[0] == 7
    killer = _actor_killer(session, actor)
    killer.start()
    pids = set()
    try:
        for batch in range(25):
            start = batch * 20
            # Calls straight from the driver, and from a task (another caller process).
            from_task = call_from_task.remote(actor, 10_000 + start, 10)
            results = rayx.get([actor.double.remote(start + j) for j in range(20)], timeout=120)
            assert [v for v, _ in results] == [2 * (start + j) + 7 for j in range(20)]
            assert rayx.get(from_task, timeout=120) == [2 * (10_000 + start + j) + 7 for j in range(10)]
            pids.update(pid for _, pid in results)
    finally:
        kills = killer.stop()
    assert kills >= 1
    record = wait_for(lambda: (lambda r: r if r["state"] == "ALIVE" else None)(get_actor(actor._ray_actor_id.hex())))
    assert record and record["restarts"] >= kills, (record, kills)
    assert len(pids) >= 2
    assert rayx.get(actor.double.remote(1), timeout=60)[0] == 9
    rayx.kill(actor)


def test_actor_without_task_retries_fails_calls_with_actor_died(session):
    """max_task_retries=0: a call running when the worker dies fails with
    ActorDiedError (as documented); every other call returns the right value,
    and the actor keeps coming back."""
    actor = Doubler.options(max_restarts=-1, max_task_retries=0).remote(1)
    assert rayx.get(actor.double.remote(0), timeout=60)[0] == 1
    killer = _actor_killer(session, actor)
    killer.start()
    ok = died = 0
    try:
        for batch in range(15):
            refs = [actor.double.remote(batch * 20 + j) for j in range(20)]
            for j, ref in enumerate(refs):
                try:
                    value, _ = rayx.get(ref, timeout=120)
                except ActorDiedError:
                    died += 1
                else:
                    assert value == 2 * (batch * 20 + j) + 1
                    ok += 1
    finally:
        kills = killer.stop()
    assert ok > 0 and kills >= 1
    assert wait_for(lambda: get_actor(actor._ray_actor_id.hex())["state"] == "ALIVE")
    assert rayx.get(actor.double.remote(3), timeout=60)[0] == 7
    rayx.kill(actor)


def test_nothing_left_behind_after_shutdown_in_the_middle_of_chaos(session):
    """Shut down while tasks and actor calls are in flight and a worker was just
    killed: no process of the session and no arena file of it may remain."""
    actor = Doubler.options(max_restarts=-1, max_task_retries=-1).remote(0)
    rayx.get(actor.double.remote(0), timeout=60)
    killer = Killer(lambda: random.choice(session.workers() or [None]))
    killer.start()
    try:
        refs = [square.remote(i) for i in range(400)]
        calls = [actor.double.remote(i) for i in range(200)]
        check_squares(rayx.get(refs[:200], timeout=120))     # >= 1 s of work
        assert len(session.workers()) >= 1
    finally:
        kills = killer.stop()
    assert kills >= 1
    victim = random.choice(session.workers() or [None])
    if victim is not None:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    del refs, calls
    assert len(session.procs) > 5          # shards, raylet, and the workers seen
    # The check sees this session while it runs (its arena, its raylet), so its
    # silence after shutdown means something.
    before = session.leftovers()
    assert any(item.startswith(session.arena_prefix) for item in before), before
    assert any(item.startswith(f"process {session.raylet.pid}:") for item in before), before
    session.shutdown_and_check()
