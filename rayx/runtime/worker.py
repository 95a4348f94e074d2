"""A worker process's main (``python -m rayx.worker_main``, started by the raylet).

A worker connects to its raylet, registers with the id it was started with,
then runs what it is sent: one task at a time, or, once it has run an actor's
constructor, that actor's method calls (``rayx.runtime.executor``). The raylet
is its parent; when the raylet dies, so does the worker.
"""
import os
import sys


def main():
    from rayx._private.process import die_with_parent
    die_with_parent()
    from rayx.gcs import GcsClient
    from rayx.runtime import context
    from rayx.runtime.core_worker import CoreWorker
    from rayx.runtime.executor import Executor

    session_dir = os.environ["RAYX_SESSION_DIR"]
    with open(os.path.join(session_dir, "token")) as f:
        password = f.read().strip()
    gcs = GcsClient(os.environ["RAYX_GCS_ADDRESS"], password)
    executor = Executor()
    core = CoreWorker("worker", os.environ["RAYX_RAYLET_SOCKET"], gcs, b"\0\0\0\0",
                      bytes.fromhex(os.environ["RAYX_WORKER_ID"]), executor=executor)
    context.connect(core, gcs, session_dir)
    executor.run(core)
    core.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
