"""Record, then check, that a test run leaves no rayx process or /dev/shm arena behind.

    python ci/check_leftovers.py snapshot FILE   # before the tests
    python ci/check_leftovers.py check FILE      # after: fail on anything new
"""
import json
import os
import sys

import psutil


def current():
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "rayx.raylet.main" in cmdline or "rayx.worker_main" in cmdline or (
                "redis-server" in cmdline and "rayx" in cmdline):
            found.add(f"process {proc.info['pid']}: {cmdline[:120]}")
    for name in os.listdir("/dev/shm"):
        if name.startswith("rayx-"):
            found.add(f"/dev/shm/{name}")
    return found


def main():
    action, path = sys.argv[1], sys.argv[2]
    if action == "snapshot":
        with open(path, "w") as f:
            json.dump(sorted(current()), f)
        return 0
    with open(path) as f:
        before = set(json.load(f))
    leftovers = sorted(current() - before)
    if leftovers:
        print("Left behind by the tests:\n  " + "\n  ".join(leftovers))
        return 1
    print("No rayx process or arena file left behind.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
