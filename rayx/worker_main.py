"""The worker process's entry point, ``python -m rayx.worker_main`` (what the raylet
starts); the worker itself is ``rayx.runtime.worker``."""
from rayx.runtime.worker import main

if __name__ == "__main__":
    main()
