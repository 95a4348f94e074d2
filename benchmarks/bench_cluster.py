"""Cross-node benchmarks on one machine: object transfer throughput between two
nodes (1 MB to 1 GB), and empty-task throughput with 1, 2 and 4 nodes.

    python benchmarks/bench_cluster.py [--max-mb 1024] [--tasks 4000]

Each node is a full rayx node (raylet, arena, workers) on its own loopback
address; on a 2-core machine the nodes share the cores, so the scaling curve
shows overheads rather than added capacity.
"""
import argparse
import json
import os
import time

import numpy as np

import rayx
from rayx.cluster_utils import Cluster


def transfer_throughput(max_mb):
    cluster = Cluster()
    cluster.add_node(num_cpus=1, object_store_memory=(2 * max_mb + 256) << 20)
    cluster.add_node(num_cpus=1, resources={"src": 1}, object_store_memory=(2 * max_mb + 256) << 20)
    cluster.connect()
    rows = []
    try:
        @rayx.remote(resources={"src": 1})
        def produce(n):
            return np.ones(n, dtype=np.uint8)

        size = 1
        while size <= max_mb:
            ref = produce.remote(size << 20)
            rayx.wait([ref], fetch_local=False, timeout=600)
            start = time.perf_counter()
            arr = rayx.get(ref, timeout=600)
            elapsed = time.perf_counter() - start
            assert arr.nbytes == size << 20
            del arr, ref
            rows.append({"mb": size, "seconds": elapsed, "gb_per_s": (size << 20) / elapsed / 1e9})
            print(f"transfer {size:5d} MB: {rows[-1]['gb_per_s']:.2f} GB/s ({elapsed * 1000:.1f} ms)", flush=True)
            size *= 4 if size < max_mb // 4 or size == 1 else 2
    finally:
        cluster.shutdown()
    return rows


def task_throughput(num_nodes, num_tasks):
    cluster = Cluster()
    for _ in range(num_nodes):
        cluster.add_node(num_cpus=1, object_store_memory=128 << 20)
    cluster.connect()
    try:
        @rayx.remote
        def empty():
            return None

        rayx.get([empty.remote() for _ in range(200)], timeout=300)   # warm up
        start = time.perf_counter()
        rayx.get([empty.remote() for _ in range(num_tasks)], timeout=600)
        elapsed = time.perf_counter() - start
    finally:
        cluster.shutdown()
    rate = num_tasks / elapsed
    print(f"tasks with {num_nodes} node(s): {rate:,.0f} tasks/s", flush=True)
    return {"nodes": num_nodes, "tasks_per_s": rate}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-mb", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
               "transfer": transfer_throughput(args.max_mb),
               "scaling": [task_throughput(n, args.tasks) for n in (1, 2, 4)]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
