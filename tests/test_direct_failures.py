"""Direct actor calls when the actor's process dies: calls that were running
fail or are retried as max_task_retries says, the channel finds the restarted
worker, and calls to a killed actor get the raylet's death reason.

A fresh node per test; generous timeouts, no wall-clock assertions.
"""
import os
import signal
import time

import pytest

import rayx
from rayx.runtime import context
from rayx.exceptions import ActorDiedError


@rayx.remote
class Sleeper:
    def pid(self):
        return os.getpid()

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def echo(self, value):
        return value


def _channel(handle):
    return context.core_worker().actor_calls.channels.get(handle._actor_id)


def test_running_call_on_killed_worker(rayx_fresh):
    actor = Sleeper.options(max_restarts=1).remote()
    pid = rayx.get(actor.pid.remote())
    running = actor.sleep.remote(30)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError):
        rayx.get(running, timeout=60)
    # Restarted; the channel found the new worker and goes direct again.
    new_pid = rayx.get(actor.pid.remote(), timeout=60)
    assert new_pid != pid
    assert _channel(actor).mode == "direct"


def test_running_call_retried_after_restart(rayx_fresh):
    actor = Sleeper.options(max_restarts=1, max_task_retries=1).remote()
    pid = rayx.get(actor.pid.remote())
    running = actor.sleep.remote(3)
    queued = actor.echo.remote("queued")
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    assert rayx.get(running, timeout=60) == 3
    assert rayx.get(queued, timeout=60) == "queued"


def test_kill_then_call(rayx_fresh):
    actor = Sleeper.remote()
    rayx.get(actor.echo.remote(1))
    rayx.kill(actor)
    with pytest.raises(ActorDiedError) as info:
        rayx.get(actor.echo.remote(2), timeout=60)
    assert "kill" in str(info.value)
    assert _channel(actor).mode == "raylet"
