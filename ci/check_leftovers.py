"""Fail if a test run left a rayx process or a /dev/shm arena behind."""
import os
import sys

import psutil

leftovers = []
for proc in psutil.process_iter(["pid", "cmdline"]):
    cmdline = " ".join(proc.info["cmdline"] or [])
    if "rayx.raylet.main" in cmdline or "rayx.worker_main" in cmdline or (
            "redis-server" in cmdline and "rayx" in cmdline):
        leftovers.append(f"process {proc.info['pid']}: {cmdline[:120]}")
for name in os.listdir("/dev/shm"):
    if name.startswith("rayx-"):
        leftovers.append(f"/dev/shm/{name}")
if leftovers:
    print("Left behind by the tests:\n  " + "\n  ".join(leftovers))
    sys.exit(1)
print("No rayx process or arena file left behind.")
