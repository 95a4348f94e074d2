"""Run the `ray microbenchmark` workloads on Ray and on rayx, on this machine, and compare.

    python benchmarks/compare_ray.py --ray-python /work/RAYENV/bin/python

``--ray-python`` is a Python that has Ray installed (in its own virtual
environment: rayx never depends on Ray). Each row of the suite
(rayx/_private/microbenchmark.py, the same file for both systems) runs in a
fresh subprocess per system, Ray and rayx alternating row by row (which one
goes first alternates too), so slow drift of the machine hits both alike and a
row that hangs is killed after ``--row-timeout`` without stopping the rest.

Two more rows:

* cold start: in a fresh process, ``init()`` until the result of the first
  task is back (median of ``--cold-runs`` runs, alternating systems; the import
  time is measured separately and not included);
* idle memory: a fresh one-node cluster after ``init()`` and one task, left
  idle for ``--settle`` seconds; the sum of USS (``memory_full_info().uss``,
  memory no other process shares) over the driver and every process descended
  from it (which covers GCS, raylet, workers and, for Ray, the dashboard and
  agents). Ray is measured twice: as ``ray.init()`` starts it (with the
  dashboard when ray[default] is installed) and with ``include_dashboard=False``.

Writes benchmarks/results/compare-<UTC date>.json and regenerates the table in
benchmarks/README.md (``--from-json FILE`` regenerates it from a saved file).
"""
import argparse
import datetime
import json
import os
import shutil
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MODULE = os.path.join(REPO, "rayx", "_private", "microbenchmark.py")
RESULTS = os.path.join(HERE, "results")
README = os.path.join(HERE, "README.md")
TABLE_START = "<!-- compare-table:start -->"
TABLE_END = "<!-- compare-table:end -->"

from rayx._private import microbenchmark as bench  # noqa: E402

GB_ROWS = {"single client put gigabytes", "multi client put gigabytes"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def clean_env(system):
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("RAYX_", "RAY_ADDRESS")):
            del env[key]
    env["PYTHONUNBUFFERED"] = "1"
    if system == "ray":
        env.pop("PYTHONPATH", None)
    return env


def run_proc(cmd, system, cwd, timeout, stdin=None):
    """Run cmd in its own session; kill its whole process group on timeout.
    Returns (returncode or None on timeout, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=clean_env(system), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL if stdin is None else stdin,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        return None, out, err


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # the group this script created for proc
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------
# The suite, row by row


def run_row(system, python, name, args, workdir):
    out_json = os.path.join(workdir, f"{system}-{bench.key_of(name)}.json")
    cmd = [python, MODULE, "--framework", system, "--name", name, "--json", out_json,
           "--round-seconds", str(args.round_seconds), "--rounds", str(args.rounds),
           "--initial-sleep", str(args.initial_sleep)]
    start = time.perf_counter()
    code, out, err = run_proc(cmd, system, workdir, args.row_timeout)
    wall = time.perf_counter() - start
    report = None
    if os.path.exists(out_json):
        with open(out_json) as f:
            report = json.load(f)
    entry = {"wall_seconds": wall, "returncode": code}
    if report and report["results"]:
        entry.update(report["results"][0])
        entry["version"] = report["version"]
    else:
        if code is None:
            entry["error"] = f"timed out after {args.row_timeout:.0f} s"
        elif report and report["failed"]:
            entry["error"] = report["failed"][0]["error"]
        else:
            entry["error"] = f"exit code {code}"
        entry["stdout_tail"] = out[-2000:]
        entry["stderr_tail"] = err[-4000:]
    return entry


def run_suite(args, pythons, workdir):
    names = bench.select(args.filter, args.exclude)
    suite = {"ray": {}, "rayx": {}}
    order = ["ray", "rayx"]
    for i, name in enumerate(names):
        systems = order if i % 2 == 0 else order[::-1]
        for system in systems:
            entry = run_row(system, pythons[system], name, args, workdir)
            suite[system][name] = entry
            if "mean" in entry:
                log(f"[{system:4s}] {name} per second {entry['mean']:.2f} +- {entry['std']:.2f}")
            else:
                log(f"[{system:4s}] {name} FAILED: {entry['error']}")
    return names, suite


# ---------------------------------------------------------------------------
# Cold start

COLD_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import {module} as m
t1 = time.perf_counter()
m.init()
@m.remote
def small_value():
    return b"ok"
assert m.get(small_value.remote()) == b"ok"
t2 = time.perf_counter()
m.shutdown()
t3 = time.perf_counter()
print("RESULT " + json.dumps({{"import": t1 - t0, "init_to_first_result": t2 - t1, "shutdown": t3 - t2}}))
"""


def cold_start(args, pythons, workdir):
    runs = {"ray": [], "rayx": []}
    errors = {}
    for i in range(args.cold_runs):
        for system in (("ray", "rayx") if i % 2 == 0 else ("rayx", "ray")):
            start = time.perf_counter()
            code, out, err = run_proc([pythons[system], "-c", COLD_SCRIPT.format(module=system)],
                                      system, workdir, 180)
            wall = time.perf_counter() - start
            line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            if code != 0 or not line:
                errors[system] = f"exit {code}: {err[-1500:]}"
                log(f"[{system:4s}] cold start run {i} failed: exit {code}")
                continue
            result = json.loads(line[-1][len("RESULT "):])
            result["process_wall"] = wall
            runs[system].append(result)
            log(f"[{system:4s}] cold start run {i}: init->first result "
                f"{result['init_to_first_result']:.3f} s (import {result['import']:.3f} s)")
    summary = {}
    for system, values in runs.items():
        if values:
            summary[system] = {
                "median_init_to_first_result": statistics.median(v["init_to_first_result"] for v in values),
                "median_import": statistics.median(v["import"] for v in values),
                "median_process_wall": statistics.median(v["process_wall"] for v in values),
                "runs": values,
            }
        else:
            summary[system] = {"error": errors.get(system, "no run")}
    return summary


# ---------------------------------------------------------------------------
# Idle memory

MEM_SCRIPT = r"""
import json, os, sys
import {module} as m
m.init({init_args})
@m.remote
def small_value():
    return b"ok"
m.get(small_value.remote())
print("READY " + json.dumps({{"pid": os.getpid()}}), flush=True)
sys.stdin.readline()
m.shutdown()
"""


def describe(proc):
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        cmdline = "?"
    return cmdline[:160]


def measure_tree(pid):
    root = psutil.Process(pid)
    procs = [root] + root.children(recursive=True)
    rows = []
    for proc in procs:
        try:
            info = proc.memory_full_info()
            rows.append({"role": "driver" if proc.pid == pid else "child", "pid": proc.pid, "ppid": proc.ppid(), "uss": info.uss, "rss": info.rss,
                         "pss": getattr(info, "pss", None), "cmdline": describe(proc)})
        except psutil.Error:
            continue
    return rows


def idle_memory(system, python, workdir, settle, init_args=""):
    proc = subprocess.Popen([python, "-c", MEM_SCRIPT.format(module=system, init_args=init_args)],
                            cwd=workdir, env=clean_env(system), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        pid = None
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                pid = json.loads(line[len("READY "):])["pid"]
                break
        if pid is None:
            kill_group(proc)
            return {"error": f"the driver did not start: {proc.stderr.read()[-1500:]}"}
        time.sleep(settle)
        rows = measure_tree(pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill_group(proc)
    except BaseException:
        kill_group(proc)
        raise
    return {"uss_total": sum(r["uss"] for r in rows), "rss_total": sum(r["rss"] for r in rows),
            "processes": len(rows), "settle_seconds": settle, "init_args": init_args or "(defaults)",
            "breakdown": sorted(rows, key=lambda r: -r["uss"])}


# ---------------------------------------------------------------------------
# Output


def fmt(value):
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(data):
    lines = ["| benchmark | Ray | rayx | rayx / Ray |", "|---|---:|---:|---:|"]
    notes = []
    for name in data["rows"]:
        cells = []
        means = {}
        for system in ("ray", "rayx"):
            entry = data["suite"][system].get(name, {})
            if "mean" in entry:
                means[system] = entry["mean"]
                cells.append(f"{fmt(entry['mean'])} ± {fmt(entry['std'])}")
            else:
                cells.append("failed")
                if entry:
                    notes.append(f"{system}, {name}: {entry.get('error', '?')}".splitlines()[0][:300])
        ratio = f"{means['rayx'] / means['ray']:.2f}" if len(means) == 2 and means["ray"] else "—"
        unit = " (GB/s)" if name in GB_ROWS else ""
        lines.append(f"| {name}{unit} | {cells[0]} | {cells[1]} | {ratio} |")
    cold = data.get("cold_start")
    if cold:
        vals = {s: cold.get(s, {}).get("median_init_to_first_result") for s in ("ray", "rayx")}
        ratio = f"{vals['rayx'] / vals['ray']:.2f}" if vals["ray"] and vals["rayx"] else "—"
        lines.append(f"| cold start: init() to first task result, s (median of "
                     f"{len(cold.get('rayx', {}).get('runs', []))}; lower is better) | "
                     f"{fmt(vals['ray'])} | {fmt(vals['rayx'])} | {ratio} |")
    mem = data.get("memory")
    if mem:
        def mib(entry):
            return entry.get("uss_total", 0) / 2**20 if entry and "uss_total" in entry else None
        rayx_mib = mib(mem.get("rayx"))
        for variant, label in (("ray", "ray.init() defaults"), ("ray_no_dashboard", "include_dashboard=False")):
            ray_mib = mib(mem.get(variant))
            if ray_mib is None and variant not in mem:
                continue
            ratio = f"{rayx_mib / ray_mib:.2f}" if ray_mib and rayx_mib else "—"
            counts = f"{mem.get(variant, {}).get('processes', '?')} vs {mem.get('rayx', {}).get('processes', '?')} processes"
            lines.append(f"| idle one-node cluster, USS MiB, Ray {label} ({counts}; lower is better) | "
                         f"{fmt(ray_mib)} | {fmt(rayx_mib)} | {ratio} |")
    return "\n".join(lines), notes


def render(data):
    machine = data["machine"]
    tbl, notes = table(data)
    parts = [
        f"Measured {data['date']} on {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']:.0f} GiB RAM, Linux {machine['kernel']}, Python {machine['python']}; "
        f"Ray {data['versions'].get('ray', '?')} vs rayx {data['versions'].get('rayx', '?')}. "
        f"Rows are per second (higher is better) unless marked; mean ± std over "
        f"{data['settings']['rounds']} rounds of ≥ {data['settings']['round_seconds']} s after a "
        f"{min(1.0, data['settings']['round_seconds'] / 2):g} s warm-up, each row in a fresh process "
        f"per system (Ray and rayx alternating). n_cpu = cpu_count//2 = {machine['cpu_count'] // 2}. "
        f"Raw data: `{data['json_file']}`.",
        "",
        tbl,
    ]
    if data.get("memory"):
        parts += ["", "Idle memory counts the unique set size (USS: pages no other process maps) of the "
                  "driver and every process descended from it, after `init()`, one task and "
                  f"{data['memory'].get('rayx', {}).get('settle_seconds', '?')} s idle. Processes counted:"]
        for key, entry in data["memory"].items():
            if "breakdown" in entry:
                names = {}
                for row in entry["breakdown"]:
                    label = "driver" if row.get("role") == "driver" else short_name(row["cmdline"])
                    names[label] = names.get(label, 0) + 1
                listing = ", ".join(f"{n}×{k}" if n > 1 else k for k, n in names.items())
                parts.append(f"- {key}: {listing}")
    if notes:
        parts += ["", "Failed rows:"] + [f"- {n}" for n in notes]
    return "\n".join(parts)


def short_name(cmdline):
    """A readable label for a process: its module, script or process title."""
    if not cmdline or cmdline == "?":
        return "?"
    words = cmdline.split()
    if "/" not in words[0]:
        return words[0]                       # a process title such as ray::IDLE
    if not os.path.basename(words[0]).startswith("python"):
        return os.path.basename(words[0])     # a binary: gcs_server, raylet, redis-server
    rest = iter(words[1:])
    for word in rest:
        if word == "-m":
            return next(rest, "?")
        if word == "-c":
            code = " ".join(words)
            for what in ("forkserver", "resource_tracker"):
                if what in code:
                    return f"multiprocessing {what}"
            return "python -c"
        if not word.startswith("-"):
            return os.path.basename(word)
    return "python"


def write_readme(data):
    block = f"{TABLE_START}\n{render(data)}\n{TABLE_END}"
    if os.path.exists(README):
        text = open(README).read()
    else:
        text = ""
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        _, tail = rest.split(TABLE_END, 1)
        text = head + block + tail
    else:
        text = (text.rstrip() + "\n\n" if text else README_INTRO) + "## rayx vs Ray\n\n" + block + "\n"
    with open(README, "w") as f:
        f.write(text)


README_INTRO = """# Benchmarks

* `compare_ray.py`: the workloads of `ray microbenchmark`, run on Ray and on
  rayx on the same machine (`python benchmarks/compare_ray.py --ray-python
  /path/to/venv-with-ray/bin/python`); writes `results/compare-*.json` and the
  table below. The suite itself is `rayx/_private/microbenchmark.py`, also
  available as `rayx microbenchmark`.
* `bench_hot_paths.py`, `bench_codec.py`, `bench_store.py`: pytest-benchmark
  microbenchmarks of single code paths (`pytest benchmarks/bench_hot_paths.py`).

"""


def machine_info():
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpu_model": model,
            "memory_gib": psutil.virtual_memory().total / 2**30, "kernel": platform.release(),
            "python": platform.python_version()}


def version_of(python, module, workdir):
    code, out, _ = run_proc([python, "-c", f"import {module}; print({module}.__version__)"], module, workdir, 120)
    return out.strip() if code == 0 else "?"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-python", help="a Python with Ray installed")
    parser.add_argument("--rayx-python", default=sys.executable, help="a Python with rayx (default: this one)")
    parser.add_argument("--filter", action="append", default=[], help="only rows containing this")
    parser.add_argument("--exclude", action="append", default=[], help="skip rows containing this")
    parser.add_argument("--round-seconds", type=float, default=bench.DEFAULT_ROUND_SECONDS)
    parser.add_argument("--rounds", type=int, default=bench.DEFAULT_ROUNDS)
    parser.add_argument("--initial-sleep", type=float, default=0.0)
    parser.add_argument("--row-timeout", type=float, default=300.0, help="seconds per row and system")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before measuring memory")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    parser.add_argument("--output", default=None, help="JSON path (default results/compare-<date>.json)")
    parser.add_argument("--from-json", default=None, help="only regenerate the README table from this file")
    args = parser.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        write_readme(data)
        print(render(data))
        return 0
    if not args.ray_python:
        parser.error("--ray-python is required")

    workdir = tempfile.mkdtemp(prefix="rayx-compare-")
    try:
        return _compare(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _compare(args, workdir):
    """Run the suite, cold start and idle memory on both systems; write the results."""
    now = datetime.datetime.now(datetime.timezone.utc)
    pythons = {"ray": args.ray_python, "rayx": args.rayx_python}
    output = args.output or os.path.join(RESULTS, f"compare-{now.strftime('%Y%m%dT%H%M%SZ')}.json")
    data = {
        "date": now.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {"ray": version_of(args.ray_python, "ray", workdir),
                     "rayx": version_of(args.rayx_python, "rayx", workdir)},
        "settings": {"round_seconds": args.round_seconds, "rounds": args.rounds,
                     "initial_sleep": args.initial_sleep, "row_timeout": args.row_timeout,
                     "order": "row by row, alternating which system goes first"},
        "json_file": os.path.relpath(output, REPO),
        "rows": [], "suite": {"ray": {}, "rayx": {}},
    }
    log(f"Ray {data['versions']['ray']} vs rayx {data['versions']['rayx']} on {data['machine']['cpu_count']} CPUs")

    def save():
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with open(output, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")

    if not args.skip_suite:
        data["rows"], data["suite"] = run_suite(args, pythons, workdir)
        save()
    if not args.skip_cold:
        data["cold_start"] = cold_start(args, pythons, workdir)
        save()
    if not args.skip_memory:
        data["memory"] = {
            "ray": idle_memory("ray", args.ray_python, workdir, args.settle),
            "ray_no_dashboard": idle_memory("ray", args.ray_python, workdir, args.settle,
                                            "include_dashboard=False"),
            "rayx": idle_memory("rayx", args.rayx_python, workdir, args.settle),
        }
        for key, entry in data["memory"].items():
            if "uss_total" in entry:
                log(f"[{key}] idle USS {entry['uss_total'] / 2**20:.0f} MiB over {entry['processes']} processes")
            else:
                log(f"[{key}] idle memory failed: {entry['error']}")
        save()
    if not args.no_readme:
        write_readme(data)
    print(render(data))
    log(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
