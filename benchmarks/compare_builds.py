"""Compare two builds of rayx on this machine, row by row: is a change slower?

    python benchmarks/compare_builds.py --base-python OLD/venv/bin/python [--passes 3]

Each Python must have its own rayx installed (an editable install of another
checkout, e.g. a git worktree of the commit before the change). The rows are
those of ``benchmarks/compare_ray.py`` (the microbenchmark suite in
rayx/_private/microbenchmark.py, this checkout's copy for both builds), each
run in a fresh subprocess per build, the builds alternating row by row and
which goes first alternating too, repeated ``--passes`` times. For each row it
reports both builds' median rate, the ratio new/base, and the noise: the
largest relative spread between passes of the same build. A row is flagged
slower only when the ratio falls below 1 by more than that noise.

Writes benchmarks/results/builds-<UTC date>.json.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile

import compare_ray

RESULTS = compare_ray.RESULTS
bench = compare_ray.bench


def spread(values):
    """The largest relative distance of a pass from the median of its build."""
    median = statistics.median(values)
    return max(abs(v - median) for v in values) / median if median else 0.0


def compare(args, workdir):
    names = bench.select(args.filter, args.exclude)
    runs = {name: {"base": [], "new": []} for name in names}
    pythons = {"base": args.base_python, "new": args.new_python}
    for p in range(args.passes):
        for i, name in enumerate(names):
            order = ("base", "new") if (i + p) % 2 == 0 else ("new", "base")
            for build in order:
                entry = compare_ray.run_row("rayx", pythons[build], name, args, workdir)
                if "mean" in entry:
                    runs[name][build].append(entry["mean"])
                    compare_ray.log(f"[{build:4s}] pass {p} {name}: {entry['mean']:.2f}/s")
                else:
                    compare_ray.log(f"[{build:4s}] pass {p} {name} FAILED: {entry['error']}")
    rows = []
    for name in names:
        base, new = runs[name]["base"], runs[name]["new"]
        if not base or not new:
            rows.append({"name": name, "error": "a build failed this row", "base": base, "new": new})
            continue
        ratio = statistics.median(new) / statistics.median(base)
        noise = max(spread(base), spread(new))
        rows.append({"name": name, "base": base, "new": new, "ratio": ratio, "noise": noise,
                     "slower": ratio < 1 - noise})
    return rows


def render(rows):
    lines = ["| row | base /s | new /s | new/base | noise | |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | | | | | {row['error']} |")
            continue
        lines.append(f"| {row['name']} | {statistics.median(row['base']):,.1f} | "
                     f"{statistics.median(row['new']):,.1f} | {row['ratio']:.2f} | "
                     f"±{row['noise']:.0%} | {'SLOWER' if row['slower'] else ''} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-python", required=True, help="a Python with the base build of rayx")
    parser.add_argument("--new-python", default=sys.executable, help="a Python with the new build (default: this one)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--filter", action="append", default=[], help="only rows containing this")
    parser.add_argument("--exclude", action="append", default=[], help="skip rows containing this")
    parser.add_argument("--round-seconds", type=float, default=bench.DEFAULT_ROUND_SECONDS)
    parser.add_argument("--rounds", type=int, default=bench.DEFAULT_ROUNDS)
    parser.add_argument("--initial-sleep", type=float, default=0.0)
    parser.add_argument("--row-timeout", type=float, default=300.0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    now = datetime.datetime.now(datetime.timezone.utc)
    output = args.output or os.path.join(RESULTS, f"builds-{now.strftime('%Y%m%dT%H%M%SZ')}.json")
    workdir = tempfile.mkdtemp(prefix="rayx-builds-")
    try:
        rows = compare(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data = {"date": now.isoformat(timespec="seconds"), "machine": compare_ray.machine_info(),
            "builds": {"base": compare_ray.version_of(args.base_python, "rayx", "."),
                       "new": compare_ray.version_of(args.new_python, "rayx", ".")},
            "settings": {"passes": args.passes, "round_seconds": args.round_seconds, "rounds": args.rounds},
            "rows": rows}
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(render(rows))
    return 1 if any(row.get("slower") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
