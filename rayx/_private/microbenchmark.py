"""The workloads of ``ray microbenchmark``, runnable against rayx *or* Ray.

Every row is the same workload as the row of the same name in Ray's suite
(see shared/research/perf.md, section 1, Part A) and is timed the same way:

* warm-up: call ``fn()`` for ``warmup_seconds`` (1 s) and count the calls;
* ``step = count // 10 + 1``;
* ``rounds`` (4) rounds, each calling ``fn`` in groups of ``step`` until at
  least ``round_seconds`` (2 s) have passed, recording
  ``multiplier * calls / elapsed``;
* print ``<name> per second <mean> +- <std>`` (population std of the rounds).

Ray sleeps 10 s before each row (noisy neighbours on its CI machines); here
that sleep is ``initial_sleep`` and defaults to 0.

The framework is a parameter: ``run(rayx, ...)`` or ``run(ray, ...)``. Only
the Ray Core API both share is used (init, shutdown, remote, get, put, wait,
kill, actor ``options``), and the fixtures are defined inside a function so
they are pickled by value: the workers of either system never import this
module. So the file also runs as a script under a Python that has Ray and not
rayx::

    python rayx/_private/microbenchmark.py --framework ray --filter "tasks sync"

It imports nothing from rayx at module level for the same reason.
"""
import argparse
import datetime
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import traceback

DEFAULT_ROUND_SECONDS = 2.0
DEFAULT_WARMUP_SECONDS = 1.0
DEFAULT_ROUNDS = 4


def key_of(name):
    """Ray's release-harness key of a row name: ``1:1 actor calls sync`` -> ``1_1_actor_calls_sync``."""
    return name.replace(" ", "_").replace(":", "_").replace("-", "_").replace("(", "").replace(")", "")


# ---------------------------------------------------------------------------
# Fixtures. Everything is built inside `_make_fixtures` so that cloudpickle
# ships the code by value (a nested function or class is not importable).


def _make_fixtures(ray):
    import numpy as np

    @ray.remote
    def small_value():
        return b"ok"

    @ray.remote
    def do_put_small():
        for _ in range(100):
            ray.put(0)

    @ray.remote
    def do_put_large():
        for _ in range(10):
            ray.put(np.zeros(10 * 1024 * 1024, dtype=np.int64))

    @ray.remote
    def create_object_containing_ref():
        return [ray.put(1) for _ in range(10000)]

    @ray.remote
    def work(actors, calls):
        ray.get([actors[i % len(actors)].small_value.remote() for i in range(calls)])

    @ray.remote(num_cpus=0)
    class Actor:
        def small_value(self):
            return b"ok"

        def small_value_arg(self, x):
            return b"ok"

        def small_value_batch(self, n):
            ray.get([small_value.remote() for _ in range(n)])

    @ray.remote
    class AsyncActor:
        async def small_value(self):
            return b"ok"

        async def small_value_with_arg(self, x):
            return b"ok"

        async def small_value_batch(self, n):
            ray.get([small_value.remote() for _ in range(n)])

    @ray.remote(num_cpus=0)
    class Client:
        def __init__(self, servers):
            self.servers = servers if isinstance(servers, list) else [servers]

        def small_value_batch(self, n):
            refs = []
            for server in self.servers:
                refs.extend(server.small_value.remote() for _ in range(n))
            ray.get(refs)

        def small_value_batch_arg(self, n):
            x = ray.put(0)
            refs = []
            for server in self.servers:
                refs.extend(server.small_value_arg.remote(x) for _ in range(n))
            ray.get(refs)

    return dict(np=np, small_value=small_value, do_put_small=do_put_small, do_put_large=do_put_large,
                create_object_containing_ref=create_object_containing_ref, work=work, Actor=Actor,
                AsyncActor=AsyncActor, Client=Client)


# ---------------------------------------------------------------------------
# Rows. Each setup(ray, fx, n_cpu) returns (fn, actors to kill afterwards).


def _get_calls(ray, fx, n_cpu):
    value = ray.put(0)
    return (lambda: ray.get(value)), []


def _put_calls(ray, fx, n_cpu):
    return (lambda: ray.put(0)), []


def _multi_put_calls(ray, fx, n_cpu):
    f = fx["do_put_small"]
    return (lambda: ray.get([f.remote() for _ in range(10)])), []


def _put_gigabytes(ray, fx, n_cpu):
    np = fx["np"]
    arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
    return (lambda: ray.put(arr)), []


def _tasks_and_get_batch(ray, fx, n_cpu):
    f = fx["small_value"]
    return (lambda: ray.get([f.remote() for _ in range(1000)])), []


def _multi_put_gigabytes(ray, fx, n_cpu):
    f = fx["do_put_large"]
    return (lambda: ray.get([f.remote() for _ in range(10)])), []


def _get_10k_refs(ray, fx, n_cpu):
    ref = fx["create_object_containing_ref"].remote()
    ray.get(ref)   # created before timing, as Ray does it once outside fn
    return (lambda: ray.get(ref)), []


def _wait_1k_refs(ray, fx, n_cpu):
    f = fx["small_value"]

    def fn():
        not_ready = [f.remote() for _ in range(1000)]
        # The first wait asks for every object to be fetched; later ones need not.
        fetch_local = True
        for _ in range(1000):
            _, not_ready = ray.wait(not_ready, fetch_local=fetch_local)
            fetch_local = False
    return fn, []


def _tasks_sync(ray, fx, n_cpu):
    f = fx["small_value"]
    return (lambda: ray.get(f.remote())), []


def _tasks_async(ray, fx, n_cpu):
    f = fx["small_value"]
    return (lambda: ray.get([f.remote() for _ in range(1000)])), []


def _multi_tasks_async(ray, fx, n_cpu):
    actors = [fx["Actor"].remote() for _ in range(4)]
    return (lambda: ray.get([a.small_value_batch.remote(10000) for a in actors])), actors


def _actor_sync(ray, fx, n_cpu):
    a = fx["Actor"].remote()
    return (lambda: ray.get(a.small_value.remote())), [a]


def _actor_async(ray, fx, n_cpu):
    a = fx["Actor"].remote()
    return (lambda: ray.get([a.small_value.remote() for _ in range(1000)])), [a]


def _actor_concurrent(ray, fx, n_cpu):
    a = fx["Actor"].options(max_concurrency=16).remote()
    return (lambda: ray.get([a.small_value.remote() for _ in range(1000)])), [a]


def _one_to_n(actor_class):
    def setup(ray, fx, n_cpu):
        servers = [fx[actor_class].remote() for _ in range(n_cpu)]
        client = fx["Client"].remote(servers)
        return (lambda: ray.get(client.small_value_batch.remote(5000))), servers + [client]
    return setup


def _n_to_n(actor_class):
    def setup(ray, fx, n_cpu):
        actors = [fx[actor_class].remote() for _ in range(n_cpu)]
        work = fx["work"]
        return (lambda: ray.get([work.remote(actors, 5000) for _ in range(4)])), actors
    return setup


def _n_to_n_with_arg(ray, fx, n_cpu):
    servers = [fx["Actor"].remote() for _ in range(n_cpu)]
    clients = [fx["Client"].remote(s) for s in servers]
    return (lambda: ray.get([c.small_value_batch_arg.remote(1000) for c in clients])), servers + clients


def _async_actor_sync(ray, fx, n_cpu):
    a = fx["AsyncActor"].remote()
    return (lambda: ray.get(a.small_value.remote())), [a]


def _async_actor_async(ray, fx, n_cpu):
    a = fx["AsyncActor"].remote()
    return (lambda: ray.get([a.small_value.remote() for _ in range(1000)])), [a]


def _async_actor_args(ray, fx, n_cpu):
    a = fx["AsyncActor"].remote()
    return (lambda: ray.get([a.small_value_with_arg.remote(i) for i in range(1000)])), [a]


# (name, setup, multiplier); a callable multiplier takes n_cpu.
ROWS = [
    ("single client get calls (Plasma Store)", _get_calls, 1),
    ("single client put calls (Plasma Store)", _put_calls, 1),
    ("multi client put calls (Plasma Store)", _multi_put_calls, 1000),
    ("single client put gigabytes", _put_gigabytes, 8 * 0.1),
    ("single client tasks and get batch", _tasks_and_get_batch, 1),
    ("multi client put gigabytes", _multi_put_gigabytes, 10 * 8 * 0.1),
    ("single client get object containing 10k refs", _get_10k_refs, 1),
    ("single client wait 1k refs", _wait_1k_refs, 1),
    ("single client tasks sync", _tasks_sync, 1),
    ("single client tasks async", _tasks_async, 1000),
    ("multi client tasks async", _multi_tasks_async, 4 * 10000),
    ("1:1 actor calls sync", _actor_sync, 1),
    ("1:1 actor calls async", _actor_async, 1000),
    ("1:1 actor calls concurrent", _actor_concurrent, 1000),
    ("1:n actor calls async", _one_to_n("Actor"), lambda n_cpu: 5000 * n_cpu),
    ("n:n actor calls async", _n_to_n("Actor"), 4 * 5000),
    ("n:n actor calls with arg async", _n_to_n_with_arg, lambda n_cpu: 1000 * n_cpu),
    ("1:1 async-actor calls sync", _async_actor_sync, 1),
    ("1:1 async-actor calls async", _async_actor_async, 1000),
    ("1:1 async-actor calls with args async", _async_actor_args, 1000),
    ("1:n async-actor calls async", _one_to_n("AsyncActor"), lambda n_cpu: 5000 * n_cpu),
    ("n:n async-actor calls async", _n_to_n("AsyncActor"), 4 * 5000),
]

ROW_NAMES = [name for name, _, _ in ROWS]


def select(filter=None, exclude=None, names=None):
    """Names of the rows to run: exact ``names`` if given, else rows containing any
    ``filter`` substring (all rows when empty) and none of the ``exclude`` ones."""
    def as_list(value):
        if not value:
            return []
        if isinstance(value, str):
            value = [value]
        out = []
        for item in value:
            out.extend(part for part in item.split(",") if part)
        return out
    if names:
        unknown = set(names) - set(ROW_NAMES)
        if unknown:
            raise ValueError(f"unknown rows: {sorted(unknown)}")
        return [n for n in ROW_NAMES if n in names]
    include, skip = as_list(filter), as_list(exclude)
    return [n for n in ROW_NAMES
            if (not include or any(s in n for s in include)) and not any(s in n for s in skip)]


# ---------------------------------------------------------------------------
# Timing


def timeit(name, fn, multiplier=1, *, round_seconds=DEFAULT_ROUND_SECONDS,
           warmup_seconds=DEFAULT_WARMUP_SECONDS, rounds=DEFAULT_ROUNDS, initial_sleep=0.0, out=print):
    """Time ``fn`` like Ray's harness; print one line and return the result dict."""
    if initial_sleep:
        time.sleep(initial_sleep)
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_seconds:
        fn()
        count += 1
    step = count // 10 + 1
    stats = []
    for _ in range(rounds):
        calls = 0
        start = time.perf_counter()
        while True:
            for _ in range(step):
                fn()
            calls += step
            elapsed = time.perf_counter() - start
            if elapsed >= round_seconds:
                break
        stats.append(multiplier * calls / elapsed)
    mean = statistics.fmean(stats)
    std = statistics.pstdev(stats) if len(stats) > 1 else 0.0
    if out is not None:
        out(f"{name} per second {round(mean, 2)} +- {round(std, 2)}")
    return {"name": name, "key": key_of(name), "mean": mean, "std": std, "rounds": stats,
            "multiplier": multiplier, "step": step}


# ---------------------------------------------------------------------------
# The suite


def run(ray_module, *, filter=None, exclude=None, names=None, round_seconds=DEFAULT_ROUND_SECONDS,
        warmup_seconds=None, rounds=DEFAULT_ROUNDS, initial_sleep=0.0, json_path=None,
        init_kwargs=None, init=True, out=print):
    """Run the selected rows against ``ray_module`` (``rayx`` or ``ray``).

    Starts a local cluster with ``ray_module.init(**init_kwargs)`` unless one is
    running or ``init`` is False, and shuts it down afterwards if it started it.
    A row that raises is reported (``<name> FAILED: ...``) and skipped.
    ``warmup_seconds`` defaults to 1 s, or half a round when rounds are shorter
    than 2 s. Returns the report dict, also written to ``json_path`` if given.
    """
    if warmup_seconds is None:
        warmup_seconds = min(DEFAULT_WARMUP_SECONDS, round_seconds / 2)
    selected = select(filter, exclude, names)
    n_cpu = multiprocessing.cpu_count() // 2
    report = {
        "system": ray_module.__name__,
        "version": getattr(ray_module, "__version__", "unknown"),
        "python": platform.python_version(),
        "cpu_count": multiprocessing.cpu_count(),
        "n_cpu": n_cpu,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "round_seconds": round_seconds,
        "warmup_seconds": warmup_seconds,
        "rounds": rounds,
        "initial_sleep": initial_sleep,
        "results": [],
        "failed": [],
    }
    if not selected:
        return report
    started = False
    if init and not ray_module.is_initialized():
        ray_module.init(**(init_kwargs or {}))
        started = True
    try:
        fixtures = _make_fixtures(ray_module)
        for name, setup, multiplier in ROWS:
            if name not in selected:
                continue
            if callable(multiplier):
                multiplier = multiplier(n_cpu)
            actors = []
            try:
                fn, actors = setup(ray_module, fixtures, n_cpu)
                result = timeit(name, fn, multiplier, round_seconds=round_seconds,
                                warmup_seconds=warmup_seconds, rounds=rounds,
                                initial_sleep=initial_sleep, out=out)
                report["results"].append(result)
            except Exception as exc:
                if out is not None:
                    out(f"{name} FAILED: {type(exc).__name__}: {exc}")
                report["failed"].append({"name": name, "error": f"{type(exc).__name__}: {exc}",
                                         "traceback": traceback.format_exc()})
            finally:
                for actor in actors:
                    try:
                        ray_module.kill(actor)
                    except Exception:
                        pass
                del actors
                gc.collect()
    finally:
        if started:
            ray_module.shutdown()
    if json_path:
        write_json(report, json_path)
    return report


def write_json(report, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Ray's microbenchmark workloads, for rayx or Ray.")
    parser.add_argument("--framework", default="rayx", choices=["rayx", "ray"],
                        help="module to benchmark (default rayx)")
    parser.add_argument("--filter", action="append", default=[],
                        help="run only rows whose name contains this (repeatable, or comma-separated)")
    parser.add_argument("--exclude", action="append", default=[],
                        help="skip rows whose name contains this (repeatable, or comma-separated)")
    parser.add_argument("--name", action="append", default=[], help="run exactly this row (repeatable)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results to this file")
    parser.add_argument("--round-seconds", type=float, default=DEFAULT_ROUND_SECONDS)
    parser.add_argument("--warmup-seconds", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--initial-sleep", type=float, default=0.0,
                        help="seconds to sleep before each row (Ray uses 10)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test mode: 0.05 s rounds, 2 rounds")
    parser.add_argument("--list", action="store_true", help="print the row names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(select(args.filter, args.exclude, args.name)))
        return 0
    if args.quick:
        args.round_seconds, args.rounds = 0.05, 2
    import importlib
    module = importlib.import_module(args.framework)
    report = run(module, filter=args.filter, exclude=args.exclude, names=args.name,
                 round_seconds=args.round_seconds, warmup_seconds=args.warmup_seconds,
                 rounds=args.rounds, initial_sleep=args.initial_sleep, json_path=args.json_path)
    sys.stdout.flush()
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
