"""Node failure under load: the Ray paper's Figure 11a at this machine's scale.

    python benchmarks/node_failure.py [--duration 30] [--kill-at 10] [--add-at 20] [--ray]

A 3-node cluster on one machine (head + 2 worker nodes, 2 CPUs each; the
head's node timeout 2 s) runs chains of short tasks that a driver keeps
submitting: each task sleeps ~10 ms and returns its input array plus one
(200 KB of int64, so every intermediate object lives in the shared-memory
arena of the node that made it, and the next task of the chain needs it). At
t = --kill-at one worker node's raylet is SIGKILLed (``remove_node(node,
allow_graceful=False)``: a crash, nothing is handed over); at t = --add-at a
new node joins. What it shows is what the paper's figure shows: how long the
system takes to notice the death (polled through ``nodes()``), how far
throughput drops while the lost tasks run again elsewhere and the lost
objects are rebuilt from lineage, and how soon it is back at the throughput
it had before the kill once capacity returns. Every chain ends with a check
of its final value; any chain that is wrong, failed or never finishes makes
the run fail.

The driver observes completions with ``wait`` (``fetch_local=False``) and
counts them in 0.25 s buckets. Every run of a task (including re-runs after
the node died, and rebuilds of lost objects) appends a line to an execution
log, so the JSON also says how much work was redone.

With ``--ray`` the same driver runs against Ray (``--ray-python``, default
/work/RAYENV/bin/python, in a subprocess: rayx never imports ray) with its
health checks set to the same ~2 s timeout, for a side-by-side result.
Writes ``benchmarks/results/node-failure-<UTC timestamp>.json`` and a PNG of
throughput over time with lines at the kill, the death being noticed, and
the re-add.
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from provenance import git_commit, machine

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUCKET_S = 0.25

# Ray's node failure detection (GCS health checks), set to about rayx's node_timeout_s.
RAY_HEALTH_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                     "health_check_timeout_ms": 500, "health_check_failure_threshold": 4}


def load_system(name):
    if name == "ray":
        import ray
        from ray.cluster_utils import Cluster
    else:
        import rayx as ray
        from rayx.cluster_utils import Cluster
    return ray, Cluster


def node_id_hex(node):
    return node.node_id if isinstance(node.node_id, str) else node.node_id.hex()


def make_functions(ray, args, log_path):
    seconds = args.task_ms / 1000
    size = args.size
    options = dict(max_retries=args.max_retries, scheduling_strategy=args.strategy)

    def log_run(chain, step):
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"%d %d\n" % (chain, step))
        finally:
            os.close(fd)

    @ray.remote(**options)
    def start(chain, seed):
        log_run(chain, 0)
        time.sleep(seconds)
        return np.full(size, seed, dtype=np.int64)

    @ray.remote(**options)
    def step(prev, chain, index):
        log_run(chain, index)
        time.sleep(seconds)
        return prev + 1

    @ray.remote(max_retries=args.max_retries)
    def check(arr):
        return int(arr[0]), int(arr[-1]), int(arr.sum())

    return start, step, check


def start_cluster(system, Cluster, args):
    cluster = Cluster()
    store = args.object_store_mb << 20
    if system == "ray":
        cluster.add_node(num_cpus=args.cpus, object_store_memory=store, include_dashboard=False,
                         _system_config=RAY_HEALTH_CONFIG)
    else:
        cluster.add_node(num_cpus=args.cpus, object_store_memory=store, node_timeout_s=args.node_timeout_s)
    workers = [cluster.add_node(num_cpus=args.cpus, object_store_memory=store) for _ in range(2)]
    cluster.wait_for_nodes()
    cluster.connect()
    return cluster, workers


class Chaos:
    """Kills ``victim`` at --kill-at and adds a node at --add-at (seconds after t0).
    Runs on the main thread: Ray starts nodes only there, and a rayx raylet dies with
    the thread that started it (PR_SET_PDEATHSIG), so that thread must outlive the run."""

    def __init__(self, system, cluster, victim, args, t0):
        self.system, self.cluster, self.victim, self.args, self.t0 = system, cluster, victim, args, t0
        self.times = {}
        self.new_node_id = None
        self.error = None

    def _sleep_until(self, t, driver):
        delay = self.t0 + t - time.perf_counter()
        if delay > 0:
            driver.join(timeout=delay)
        return driver.is_alive()

    def now(self):
        return round(time.perf_counter() - self.t0, 3)

    def run(self, driver):
        try:
            if not self._sleep_until(self.args.kill_at, driver):
                return
            self.times["kill_started"] = self.now()
            if self.system == "ray":
                self.cluster.remove_node(self.victim, allow_graceful=False)
            else:
                self.cluster.remove_node(self.victim, allow_graceful=False, wait=False)
            self.times["killed"] = self.now()
            if not self._sleep_until(self.args.add_at, driver):
                return
            self.times["add_started"] = self.now()
            node = self.cluster.add_node(num_cpus=self.args.cpus, object_store_memory=self.args.object_store_mb << 20)
            self.new_node_id = node_id_hex(node)
            self.times["added"] = self.now()
        except BaseException as e:
            self.error = repr(e)


class Driver(threading.Thread):
    """Keeps ``args.chains`` chains going until --duration, then lets them finish;
    notes each step's completion and when the victim is first seen dead."""

    def __init__(self, ray, functions, args, victim_id, chaos, t0):
        super().__init__(daemon=True)
        self.ray, self.args, self.victim_id, self.chaos, self.t0 = ray, args, victim_id, chaos, t0
        self.start_fn, self.step_fn, self.check_fn = functions
        self.pending = {}        # ref -> (kind, chain, index, expected)
        self.completions = []    # time of each step completion seen, s after t0
        self.chains = {"ok": 0, "wrong": [], "failed": collections.Counter()}
        self.next_chain = 0
        self.dead_at = None
        self.stuck = False
        self.end = None
        self.error = None

    def new_chain(self):
        c = self.next_chain
        self.next_chain += 1
        seed = c * 1000
        self.pending[self.start_fn.remote(c, seed)] = ("step", c, 0, seed)

    def poll_dead(self):
        state = {n["NodeID"]: n["Alive"] for n in self.ray.nodes()}
        if state.get(self.victim_id) is False:
            self.dead_at = round(time.perf_counter() - self.t0, 3)

    def run(self):
        try:
            self._run()
        except BaseException as e:
            self.error = repr(e)

    def _run(self):
        ray, args, pending, t0 = self.ray, self.args, self.pending, self.t0
        for _ in range(args.chains):
            self.new_chain()
        last_poll = 0.0
        deadline = args.duration + args.drain_timeout
        while pending:
            now = time.perf_counter() - t0
            if now > deadline:
                self.stuck = True
                break
            if "killed" in self.chaos.times and self.dead_at is None and now - last_poll >= 0.05:
                last_poll = now
                self.poll_dead()
            ready, rest = ray.wait(list(pending), num_returns=1, timeout=0.05, fetch_local=False)
            if ready and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)
                ready += more
            t = time.perf_counter() - t0
            for ref in ready:
                kind, c, index, expected = pending.pop(ref)
                if kind == "step":
                    self.completions.append(t)
                    if index + 1 < args.chain_length:
                        pending[self.step_fn.remote(ref, c, index + 1)] = ("step", c, index + 1, expected + 1)
                    else:
                        pending[self.check_fn.remote(ref)] = ("check", c, index, expected)
                    continue
                try:
                    got = ray.get(ref, timeout=60)
                except Exception as e:       # a chain that failed: recorded, and the run fails
                    self.chains["failed"][type(e).__name__] += 1
                else:
                    if got == (expected, expected, expected * args.size):
                        self.chains["ok"] += 1
                    else:
                        self.chains["wrong"].append([c, list(got), expected])
                if t < args.duration:
                    self.new_chain()
        self.end = time.perf_counter() - t0


def run(system, args):
    ray, Cluster = load_system(system)
    log_dir = tempfile.mkdtemp(prefix="node-failure-", dir=os.environ.get("RAYX_TMPDIR"))
    log_path = os.path.join(log_dir, "runs.log")
    cluster, workers = start_cluster(system, Cluster, args)
    try:
        functions = make_functions(ray, args, log_path)
        start, step, check = functions
        # Warm up every node's workers (and the functions' export) before the clock starts.
        warm = [check.remote(step.remote(start.remote(-1, 0), -1, 1)) for _ in range(3 * args.cpus * 3)]
        ray.get(warm, timeout=300)
        victim = workers[0]
        victim_id = node_id_hex(victim)
        t0 = time.perf_counter()
        chaos = Chaos(system, cluster, victim, args, t0)
        driver = Driver(ray, functions, args, victim_id, chaos, t0)
        driver.start()
        chaos.run(driver)
        driver.join(timeout=args.duration + args.drain_timeout + 60)
        if driver.is_alive():
            raise RuntimeError("the driver thread did not finish")
        deadline = args.duration + args.drain_timeout
        while driver.dead_at is None and "killed" in chaos.times and time.perf_counter() - t0 < deadline:
            driver.poll_dead()
            time.sleep(0.05)
        nodes_after = [{"NodeID": n["NodeID"], "Alive": n["Alive"]} for n in ray.nodes()]
        unfinished = [{"ref": ref.hex(), "kind": kind, "chain": c, "index": index}
                      for ref, (kind, c, index, _) in driver.pending.items()]
        driver.pending.clear()
    finally:
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()
    with open(log_path) as f:
        runs = collections.Counter(tuple(map(int, line.split())) for line in f)
    shutil.rmtree(log_dir, ignore_errors=True)
    runs.pop((-1, 0), None)
    runs.pop((-1, 1), None)
    result = summarize(system, args, driver.completions, driver.end or (time.perf_counter() - t0), chaos,
                       driver.dead_at, driver.chains, driver.stuck, len(unfinished), runs, victim_id, nodes_after)
    result["driver_error"] = driver.error
    result["all_correct"] = result["all_correct"] and driver.error is None
    result["unfinished_detail"] = unfinished
    result["unfinished_runs"] = {f"{u['chain']}": sorted(i for (c, i), n in runs.items() if c == u["chain"])
                                 for u in unfinished}
    return result


def summarize(system, args, completions, end, chaos, dead_at, chains, stuck, unfinished, runs,
              victim_id, nodes_after):
    n_buckets = int(np.ceil(max(end, args.duration) / BUCKET_S))
    counts = np.bincount((np.array(completions) / BUCKET_S).astype(int), minlength=n_buckets)[:n_buckets]
    per_s = counts / BUCKET_S
    times = np.arange(n_buckets) * BUCKET_S

    def mean_between(a, b):
        sel = (times >= a) & (times + BUCKET_S <= b)
        return float(per_s[sel].mean()) if sel.any() else None

    # Throughput before the kill, skipping the first 2 s (the ramp-up).
    before = mean_between(min(2.0, args.kill_at / 2), args.kill_at)
    killed = chaos.times.get("killed", args.kill_at)
    added = chaos.times.get("added", args.add_at)
    # Rolling 1 s windows (window i covers [times[i], times[i] + 1 s)). After an event:
    # the lowest window before the next event, then the first window from there on
    # whose mean is back at >= 90% of the throughput before the kill with no bucket
    # in it below 75% (so a burst of completions held up by the failure does not count).
    window = int(round(1.0 / BUCKET_S))
    rolling = np.convolve(per_s, np.ones(window) / window, mode="valid")
    floor = np.array([per_s[i:i + window].min() for i in range(len(rolling))])

    def dip_and_recovery(event, until):
        idx = [i for i in range(len(rolling)) if times[i] >= event - 1.0 + BUCKET_S and times[i] + 1.0 <= until]
        if not idx or not before:
            return None, None, None
        low = min(idx, key=lambda i: rolling[i])
        for i in idx:
            if i >= low and rolling[i] >= 0.9 * before and floor[i] >= 0.75 * before:
                return float(times[low]), float(rolling[low]), round(max(float(times[i]), event), 3)
        return float(times[low]), float(rolling[low]), None

    # (Up to the start of the re-add: starting a node costs this machine's cores too.)
    add_started = chaos.times.get("add_started", args.add_at)
    dip_at, dip, recovered_at = dip_and_recovery(killed, add_started)
    add_dip_at, add_dip, add_recovered_at = dip_and_recovery(add_started, args.duration)
    steps = args.chain_length
    seen = sum(runs.values())
    distinct = len(runs)
    return {
        "system": system,
        "bucket_s": BUCKET_S,
        "throughput_per_s": [round(float(x), 1) for x in per_s],
        "tasks_completed": len(completions),
        "end_s": round(end, 3),
        "events": {**chaos.times, "marked_dead": dead_at},
        "chaos_error": chaos.error,
        "victim_node": victim_id,
        "new_node": chaos.new_node_id,
        "nodes_after": nodes_after,
        "new_node_alive_at_end": any(n["NodeID"] == chaos.new_node_id and n["Alive"] for n in nodes_after),
        "detect_s": round(dead_at - killed, 3) if dead_at is not None else None,
        "throughput_before_kill": round(before, 1) if before else None,
        "throughput_kill_to_add": round(mean_between(killed, add_started) or 0, 1),
        "throughput_after_add": round(mean_between(added + 2.0, args.duration) or 0, 1),
        "lowest_1s_throughput_after_kill": {"window_start_s": dip_at, "per_s": round(dip, 1) if dip else dip},
        "recovered_at_s": recovered_at,
        "recover_after_kill_s": round(recovered_at - killed, 3) if recovered_at is not None else None,
        "lowest_1s_throughput_after_add": {"window_start_s": add_dip_at,
                                           "per_s": round(add_dip, 1) if add_dip else add_dip},
        "recovered_after_add_at_s": add_recovered_at,
        "recover_after_add_s": round(max(0.0, add_recovered_at - added), 3) if add_recovered_at is not None else None,
        "chains_ok": chains["ok"],
        "chains_wrong": chains["wrong"],
        "chains_failed": dict(chains["failed"]),
        "chains_unfinished": unfinished,
        "stuck": stuck,
        "task_runs": seen,
        "distinct_tasks_run": distinct,
        "re_runs": seen - distinct,
        "chain_length": steps,
        "all_correct": not stuck and not chains["wrong"] and not chains["failed"] and unfinished == 0
        and chains["ok"] > 0 and chaos.error is None,
    }


def plot(results, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 3.4 * len(results)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        per_s = r["throughput_per_s"]
        t = np.arange(len(per_s)) * r["bucket_s"]
        ax.step(t, per_s, where="post", color="black", linewidth=1, label="tasks/s (0.25 s buckets)")
        ev = r["events"]
        lines = [("killed", "red", "-", "worker node SIGKILLed"),
                 ("marked_dead", "orange", "--", "marked dead"),
                 ("add_started", "green", ":", "add_node() called"),
                 ("added", "green", "-", "new node registered")]
        for key, color, style, label in lines:
            if ev.get(key) is not None:
                ax.axvline(ev[key], color=color, linestyle=style, label=f"{label} ({ev[key]:.2f} s)")
        if r.get("recovered_at_s") is not None:
            ax.axvline(r["recovered_at_s"], color="blue", linestyle=":",
                       label=f"back to pre-kill throughput ({r['recovered_at_s']:.2f} s)")
        if r.get("recovered_after_add_at_s") is not None and r["recovered_after_add_at_s"] > ev.get("added", 0):
            ax.axvline(r["recovered_after_add_at_s"], color="purple", linestyle=":",
                       label=f"back after the re-add ({r['recovered_after_add_at_s']:.2f} s)")
        if r.get("throughput_before_kill"):
            ax.axhline(r["throughput_before_kill"], color="grey", linestyle=":", linewidth=0.8)
        ax.set_ylabel("tasks/s")
        ax.set_title(f"{r['system']}: {r['tasks_completed']} tasks, {r['chains_ok']} chains checked, "
                     f"detect {r['detect_s']} s, {r['re_runs']} re-runs")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_ylim(bottom=0)
    last = max(r["end_s"] for r in results)
    axes[-1, 0].set_xlim(0, min(last, args.duration + 5) + 0.5)
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(f"Node failure (Fig. 11a at this scale): 3 nodes x {args.cpus} CPUs on {os.cpu_count()} cores, "
                 f"{args.chains} chains of {args.task_ms:g} ms tasks, {args.size * 8 // 1000} KB objects")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(r):
    print(f"{r['system']}: {r['tasks_completed']} tasks, chains ok {r['chains_ok']}, wrong {len(r['chains_wrong'])}, "
          f"failed {r['chains_failed']}, unfinished {r['chains_unfinished']}; "
          f"before kill {r['throughput_before_kill']}/s, kill->add {r['throughput_kill_to_add']}/s, "
          f"after add {r['throughput_after_add']}/s; marked dead {r['detect_s']} s after the kill; "
          f"lowest 1 s after the kill {r['lowest_1s_throughput_after_kill']['per_s']}/s, back to pre-kill throughput "
          f"{r['recover_after_kill_s']} s after the kill and {r['recover_after_add_s']} s after the re-add; "
          f"{r['re_runs']} task re-runs", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of submitting")
    parser.add_argument("--kill-at", type=float, default=10.0)
    parser.add_argument("--add-at", type=float, default=20.0)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of each node")
    parser.add_argument("--chains", type=int, default=12, help="chains in flight")
    parser.add_argument("--chain-length", type=int, default=20)
    parser.add_argument("--task-ms", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=25_000, help="int64s per object (25,000 = 200 KB)")
    parser.add_argument("--strategy", default="SPREAD", choices=["SPREAD", "DEFAULT"])
    parser.add_argument("--max-retries", type=int, default=10)
    parser.add_argument("--node-timeout-s", type=float, default=2.0)
    parser.add_argument("--object-store-mb", type=int, default=200)
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="after --duration, how long unfinished chains may take")
    parser.add_argument("--ray", action="store_true", help="also run against Ray")
    parser.add_argument("--ray-python", default="/work/RAYENV/bin/python")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--system", default="rayx", choices=["rayx", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_ray_child(args):
    """The same run against Ray, in Ray's interpreter; its result dict, or None."""
    check = subprocess.run([args.ray_python, "-c", "import ray"], capture_output=True, timeout=120)
    if check.returncode != 0:
        print(f"skipping Ray: {args.ray_python} cannot import ray", flush=True)
        return None
    tmp = tempfile.mkdtemp(prefix="node-failure-ray-", dir=os.environ.get("RAYX_TMPDIR"))
    child_json = os.path.join(tmp, "result.json")
    child_log = os.path.join(tmp, "ray.log")
    argv = [a for a in sys.argv[1:] if a != "--ray"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYX_ADDRESS")}
    try:
        print(f"running the same against Ray ({args.ray_python})", flush=True)
        with open(child_log, "w") as log:     # Ray's nodes print a lot: kept apart, shown on failure
            proc = subprocess.run([args.ray_python, os.path.abspath(__file__), *argv, "--system", "ray",
                                   "--child-json", child_json], env=env, cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=args.duration + args.drain_timeout + 600)
        if not os.path.exists(child_json):
            with open(child_log) as f:
                print(f"the Ray run failed (exit {proc.returncode}); the end of its output:\n"
                      + "".join(f.readlines()[-30:]), flush=True)
            return None
        with open(child_json) as f:
            return json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    args = parse_args()
    if not args.kill_at < args.add_at < args.duration:
        raise SystemExit("need --kill-at < --add-at < --duration")
    if args.child_json:
        result = run(args.system, args)
        with open(args.child_json, "w") as f:
            json.dump(result, f)
        return 0 if result["all_correct"] else 1
    results = [run("rayx", args)]
    print_summary(results[0])
    if args.ray:
        ray_result = run_ray_child(args)
        if ray_result is not None:
            results.append(ray_result)
            print_summary(ray_result)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    params = {k: v for k, v in vars(args).items() if k not in ("system", "child_json")}
    record = {
        "benchmark": "node_failure",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": machine(),
        "rayx_commit": git_commit(),
        "params": params,
        "ray_health_config": RAY_HEALTH_CONFIG if args.ray else None,
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"node-failure-{stamp}.json")
    with open(json_path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {json_path}")
    try:
        png_path = os.path.join(args.out, f"node-failure-{stamp}.png")
        plot(results, args, png_path)
        print(f"wrote {png_path}")
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
    return 0 if all(r["all_correct"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
