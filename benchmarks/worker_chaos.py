"""Worker chaos: what SIGKILLing a worker every 0.5 s costs a stream of short tasks.

    python benchmarks/worker_chaos.py [--tasks 10000] [--task-ms 5] [--interval 0.5]

Runs the same workload twice on a fresh one-node cluster each time: once
undisturbed, once while a thread SIGKILLs a random worker of that node every
``--interval`` seconds (only children of the benchmark's own raylet, never a
process found by name). Every tenth task returns a 240 KB array (so it lives
in the node's shared-memory arena, and a kill can land while it is written);
the others return small values. Every result is checked. Retries are counted
two ways: the attempt number of each task's last event (`rayx.util.state`)
and an execution log every run of a task appends to (a run cut short by a
kill counts there too). Fault tolerance that works should cost roughly the
work lost with each killed worker (its running and pipelined tasks) plus the
time to start a replacement, not a stall or a wrong answer.

Writes ``benchmarks/results/worker-chaos-<UTC timestamp>.json`` and prints a
summary. Exits non-zero if any result was wrong or missing.
"""
import argparse
import collections
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

import rayx
from rayx.exceptions import RayError
from rayx.runtime import context
from rayx.util.state import list_tasks

from provenance import git_commit, machine

HERE = os.path.dirname(os.path.abspath(__file__))
BIG = 30_000            # int64s: 240 KB, above the 100 KiB inline limit


@rayx.remote
def chaos_task(i, seconds, log_path):
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"%d\n" % i)
    finally:
        os.close(fd)
    time.sleep(seconds)
    if i % 10 == 0:
        return np.full(BIG, i, dtype=np.int64)
    return i * i


def is_correct(i, value):
    if i % 10 == 0:
        return isinstance(value, np.ndarray) and value.shape == (BIG,) and int(value[0]) == i \
            and int(value[-1]) == i
    return value == i * i


class Killer(threading.Thread):
    """SIGKILLs a random worker of ``raylet`` every ``interval`` seconds."""

    def __init__(self, raylet, interval, seed):
        super().__init__(daemon=True)
        self.raylet = raylet
        self.interval = interval
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.kills = []          # (seconds since start, pid)
        self.start_time = None

    def workers(self):
        found = []
        for child in self.raylet.children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "rayx.worker_main" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        return found

    def run(self):
        self.start_time = time.perf_counter()
        while not self.stopping.wait(self.interval):
            workers = self.workers()
            if not workers:
                continue
            victim = self.rng.choice(workers)
            try:
                victim.send_signal(signal.SIGKILL)     # psutil refuses a reused pid
            except psutil.NoSuchProcess:
                continue
            self.kills.append((round(time.perf_counter() - self.start_time, 3), victim.pid))

    def stop(self):
        self.stopping.set()
        self.join()


def run_once(args, kill, log_dir):
    label = "with_kills" if kill else "without_kills"
    log_path = os.path.join(log_dir, f"{label}.log")
    rayx.init(num_cpus=args.num_cpus, object_store_memory=512 << 20)
    try:
        raylet = psutil.Process(context.started_node().raylet.pid)
        seconds = args.task_ms / 1000
        warm_log = os.path.join(log_dir, f"{label}-warmup.log")
        warm_up = chaos_task.options(name="chaos_warm_up")
        rayx.get([warm_up.remote(i, seconds, warm_log) for i in range(1, 200)], timeout=300)
        killer = Killer(raylet, args.interval, args.seed) if kill else None
        if killer:
            killer.start()
        start = time.perf_counter()
        refs = [chaos_task.remote(i, seconds, log_path) for i in range(args.tasks)]
        submitted = time.perf_counter() - start
        errors = collections.Counter()
        try:
            values = rayx.get(refs, timeout=args.timeout)
        except RayError:
            values = []
            for ref in refs:          # find which failed, and why
                try:
                    values.append(rayx.get(ref, timeout=args.timeout))
                except RayError as e:
                    errors[type(e).__name__] += 1
                    values.append(e)
        elapsed = time.perf_counter() - start
        if killer:
            killer.stop()
        wrong = [i for i, v in enumerate(values) if not isinstance(v, RayError) and not is_correct(i, v)]
        del values, refs
        time.sleep(1.0)           # task events are flushed every 50 ms
        events = [t for t in list_tasks(filters=[("name", "=", "chaos_task")])
                  if t["state"] == "FINISHED"]
        attempts = collections.Counter(t["attempt"] for t in events)
        with open(log_path) as f:
            runs = collections.Counter(int(line) for line in f)
        result = {
            "kills": len(killer.kills) if killer else 0,
            "kill_times": killer.kills if killer else [],
            "elapsed_s": round(elapsed, 3),
            "submit_s": round(submitted, 3),
            "tasks_per_s": round(args.tasks / elapsed, 1),
            "errors": dict(errors),
            "wrong_results": len(wrong),
            "missing_runs": sum(1 for i in range(args.tasks) if runs[i] == 0),
            # retries the system took (attempt of each task's last, successful run)
            "retries": sum(a * n for a, n in attempts.items()) if events else None,
            "tasks_retried": sum(n for a, n in attempts.items() if a > 0) if events else None,
            "max_attempt": max(attempts) if attempts else None,
            "finished_events_seen": len(events),
            # runs beyond one per task, from the execution log (kills mid-run included)
            "extra_runs": sum(runs.values()) - len(runs),
        }
    finally:
        rayx.shutdown()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--task-ms", type=float, default=5.0, help="how long each task sleeps")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between kills")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--max-retries", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=1200.0, help="for the whole get")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    global chaos_task
    chaos_task = chaos_task.options(max_retries=args.max_retries)

    log_dir = tempfile.mkdtemp(prefix="worker-chaos-", dir=os.environ.get("RAYX_TMPDIR"))
    try:
        baseline = run_once(args, kill=False, log_dir=log_dir)
        print(f"without kills: {baseline['elapsed_s']:.2f} s ({baseline['tasks_per_s']:,.0f} tasks/s)", flush=True)
        chaos = run_once(args, kill=True, log_dir=log_dir)
        print(f"with kills:    {chaos['elapsed_s']:.2f} s ({chaos['tasks_per_s']:,.0f} tasks/s), "
              f"{chaos['kills']} workers killed, {chaos['retries']} retries "
              f"({chaos['tasks_retried']} tasks, at most attempt {chaos['max_attempt']}), "
              f"{chaos['extra_runs']} extra runs", flush=True)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record = {
        "benchmark": "worker_chaos",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": machine(),
        "rayx_commit": git_commit(),
        "params": vars(args),
        "without_kills": baseline,
        "with_kills": chaos,
        "slowdown": round(chaos["elapsed_s"] / baseline["elapsed_s"], 3),
        "all_correct": all(r["wrong_results"] == 0 and not r["errors"] and r["missing_runs"] == 0
                           for r in (baseline, chaos)),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"worker-chaos-{stamp}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"slowdown with kills: {record['slowdown']:.2f}x; every result correct: {record['all_correct']}")
    print(f"wrote {path}")
    return 0 if record["all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
