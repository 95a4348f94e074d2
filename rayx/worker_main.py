"""Entry point of a worker process: ``python -m rayx.worker_main`` (started by the raylet).

A worker connects to its raylet, registers with the id it was started with,
then runs what the raylet sends it: one task at a time, or, once it has run an
actor's constructor, that actor's method calls (see ``rayx.executor``). The
raylet is its parent; when the raylet dies, so does the worker.
"""
import os
import sys


def main():
    from rayx._private.process import die_with_parent
    die_with_parent()
    from rayx import api
    from rayx.executor import Executor
    from rayx.gcs import GcsClient
    from rayx.core_worker import CoreWorker

    session_dir = os.environ["RAYX_SESSION_DIR"]
    with open(os.path.join(session_dir, "token")) as f:
        password = f.read().strip()
    gcs = GcsClient(os.environ["RAYX_GCS_ADDRESS"], password)
    executor = Executor()
    core = CoreWorker("worker", os.environ["RAYX_RAYLET_SOCKET"], gcs, b"\0\0\0\0",
                      bytes.fromhex(os.environ["RAYX_WORKER_ID"]), on_execute=executor.submit)
    core.on_block, core.on_unblock = executor.before_blocking, executor.after_blocking
    core.on_cancel = executor.cancel
    core.executor = executor
    api._connect_worker(core, gcs, session_dir)
    executor.run(core)
    core.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
