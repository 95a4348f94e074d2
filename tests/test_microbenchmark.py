"""Smoke test of the microbenchmark suite (rayx/_private/microbenchmark.py) and
of `rayx microbenchmark`: a few cheap rows with very short rounds."""
import json
import os
import re
import subprocess
import sys

import pytest

import rayx
from rayx._private import microbenchmark as bench

LINE = re.compile(r"^(?P<name>.+) per second (?P<mean>[0-9.]+) \+- (?P<std>[0-9.]+)$")


def test_row_selection():
    assert len(bench.ROW_NAMES) == 22
    assert bench.select(filter="tasks sync") == ["single client tasks sync"]
    assert bench.select(filter=["calls sync"], exclude=["1:1 actor"]) == ["1:1 async-actor calls sync"]
    assert bench.select(filter="calls sync,concurrent", exclude="async-actor") == [
        "1:1 actor calls sync", "1:1 actor calls concurrent"]
    assert bench.select(names=["1:1 actor calls async"]) == ["1:1 actor calls async"]
    with pytest.raises(ValueError):
        bench.select(names=["no such row"])
    assert bench.key_of("single client get calls (Plasma Store)") == "single_client_get_calls_Plasma_Store"
    assert bench.key_of("1:1 async-actor calls sync") == "1_1_async_actor_calls_sync"


def test_timeit_counts_calls_in_steps():
    calls = []
    lines = []
    result = bench.timeit("noop", lambda: calls.append(1), multiplier=3, round_seconds=0.02,
                          warmup_seconds=0.01, rounds=2, out=lines.append)
    assert len(result["rounds"]) == 2 and result["mean"] > 0 and result["step"] >= 1
    assert LINE.match(lines[0]).group("name") == "noop"


def test_run_rows(shutdown_only, tmp_path):
    lines = []
    path = tmp_path / "out.json"
    report = bench.run(rayx, filter=["single client tasks sync", "put calls", "1:1 actor calls sync"],
                       exclude="multi", round_seconds=0.05, rounds=2, json_path=str(path),
                       init_kwargs=dict(num_cpus=2, object_store_memory=256 << 20), out=lines.append)
    assert not rayx.is_initialized()
    names = [LINE.match(line).group("name") for line in lines]
    assert names == ["single client put calls (Plasma Store)", "single client tasks sync",
                     "1:1 actor calls sync"], lines
    saved = json.loads(path.read_text())
    assert saved["system"] == "rayx" and saved["version"] == rayx.__version__
    assert saved["cpu_count"] == os.cpu_count() and saved["date"]
    assert [r["name"] for r in saved["results"]] == names and saved["failed"] == []
    assert all(r["mean"] > 0 for r in report["results"])


def test_cli_microbenchmark():
    out = subprocess.run([sys.executable, "-m", "rayx.scripts.cli", "microbenchmark", "--filter", "tasks sync",
                          "--round-seconds", "0.1"], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and LINE.match(lines[0]).group("name") == "single client tasks sync", out.stdout
