"""rayx.cancel of actor calls, as Ray documents it: a call that has not started
is dropped (TaskCancelledError, later calls of the same caller still run); a
running call of an async actor has its asyncio task cancelled; a running call
of a sync or threaded actor goes on (it can check is_canceled()); force=True is
refused with ValueError. On both paths: direct calls, and calls through the
raylet. Generous timeouts, no timing assertions."""
import asyncio
import os
import time

import pytest

import rayx
from rayx.runtime import context
from rayx.runtime.actor_calls import RAYLET, ActorChannel
from rayx.exceptions import TaskCancelledError

TIMEOUT = 60


@rayx.remote
class AsyncWorker:
    def __init__(self):
        self.log = []

    async def hang(self, name, flag=None):
        self.log.append(f"{name} started")
        if flag:
            open(flag, "w").close()
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            self.log.append(f"{name} cancelled")
            raise
        return name

    async def echo(self, value):
        return value

    async def history(self):
        return list(self.log)


@rayx.remote
class SyncWorker:
    def until_cancelled(self, flag):
        open(flag, "w").close()
        deadline = time.monotonic() + 120
        while not rayx.get_runtime_context().is_canceled():
            if time.monotonic() > deadline:
                return "never cancelled"
            time.sleep(0.01)
        return "noticed"

    def echo(self, value):
        return value


@rayx.remote
def wait_for(path):
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "made"


def _via_raylet(handle):
    """Make this process send its calls to ``handle`` through the raylet (as it does for
    actors on other nodes), before any call is made."""
    core = context.core_worker()
    channel = core.actor_calls.channels[handle._actor_id] = ActorChannel(core, handle._actor_id)
    channel.mode = RAYLET
    return handle


def _wait_until(check, what):
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


PATHS = ["direct", "raylet"]


def _actor(cls, path, **options):
    handle = cls.options(**options).remote() if options else cls.remote()
    return _via_raylet(handle) if path == "raylet" else handle


@pytest.mark.parametrize("path", PATHS)
def test_running_async_call_is_cancelled(rayx_start, path):
    actor = _actor(AsyncWorker, path)
    ref = actor.hang.remote("a")
    _wait_until(lambda: "a started" in rayx.get(actor.history.remote(), timeout=TIMEOUT), "a runs")
    rayx.cancel(ref)
    with pytest.raises(TaskCancelledError):
        rayx.get(ref, timeout=TIMEOUT)
    assert "a cancelled" in rayx.get(actor.history.remote(), timeout=TIMEOUT)
    assert rayx.get(actor.echo.remote("alive"), timeout=TIMEOUT) == "alive"
    rayx.kill(actor)


@pytest.mark.parametrize("path", PATHS)
def test_async_call_waiting_for_a_slot_is_dropped(rayx_start, path, tmp_path):
    actor = _actor(AsyncWorker, path, max_concurrency=1)
    flag = str(tmp_path / "first")
    running = actor.hang.remote("first", flag)
    waiting = actor.hang.remote("second")       # waits for the only slot
    _wait_until(lambda: os.path.exists(flag), "the first call runs")
    rayx.cancel(waiting)
    with pytest.raises(TaskCancelledError):
        rayx.get(waiting, timeout=TIMEOUT)
    rayx.cancel(running)
    with pytest.raises(TaskCancelledError):
        rayx.get(running, timeout=TIMEOUT)
    history = rayx.get(actor.history.remote(), timeout=TIMEOUT)
    assert "second started" not in history and "first cancelled" in history
    rayx.kill(actor)


@pytest.mark.parametrize("path", PATHS)
def test_call_waiting_for_its_argument_is_dropped(rayx_start, path, tmp_path):
    actor = _actor(SyncWorker, path)
    flag = str(tmp_path / "made")
    blocked = actor.echo.remote(wait_for.remote(flag))
    after = actor.echo.remote("after")
    rayx.cancel(blocked)
    with pytest.raises(TaskCancelledError):
        rayx.get(blocked, timeout=TIMEOUT)
    # The caller's later call does not wait for the dropped one's argument.
    assert rayx.get(after, timeout=TIMEOUT) == "after"
    open(flag, "w").close()
    rayx.kill(actor)


@pytest.mark.parametrize("path", PATHS)
def test_running_sync_call_goes_on_and_queued_one_is_dropped(rayx_start, path, tmp_path):
    actor = _actor(SyncWorker, path)
    flag = str(tmp_path / "running")
    running = actor.until_cancelled.remote(flag)
    queued = actor.echo.remote("queued")          # behind it, in the actor's worker
    _wait_until(lambda: os.path.exists(flag), "the call runs")
    with pytest.raises(ValueError, match="force=True"):
        rayx.cancel(queued, force=True)
    rayx.cancel(queued)
    rayx.cancel(running)
    assert rayx.get(running, timeout=TIMEOUT) == "noticed"
    with pytest.raises(TaskCancelledError):
        rayx.get(queued, timeout=TIMEOUT)
    assert rayx.get(actor.echo.remote("alive"), timeout=TIMEOUT) == "alive"
    rayx.kill(actor)


def test_is_canceled_outside_a_task(rayx_start):
    with pytest.raises(RuntimeError, match="is_canceled"):
        rayx.get_runtime_context().is_canceled()
