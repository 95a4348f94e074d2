"""Estimate pi with many rayx tasks, then a numpy map-reduce over shared memory.

Run it with ``python examples/monte_carlo_pi.py``: it starts a local rayx node
(GCS shards, a raylet, workers), runs the workload and stops everything.
"""
import time

import numpy as np

import rayx


@rayx.remote
def sample(num_samples, seed):
    """Count random points of the unit square that fall inside the quarter circle."""
    rng = np.random.default_rng(seed)
    xs = rng.random(num_samples)
    ys = rng.random(num_samples)
    return int(np.count_nonzero(xs * xs + ys * ys <= 1.0))


@rayx.remote
def chunk_sum_of_squares(chunk):
    """Map step: the chunk arrives zero-copy from the object store."""
    return float(np.dot(chunk, chunk))


def main():
    start = time.time()
    rayx.init()
    print(f"rayx.init() took {time.time() - start:.2f} s; cluster resources: {rayx.cluster_resources()}")

    num_tasks, per_task = 200, 200_000
    t0 = time.time()
    inside = sum(rayx.get([sample.remote(per_task, seed) for seed in range(num_tasks)]))
    pi = 4.0 * inside / (num_tasks * per_task)
    print(f"pi ~= {pi:.5f} from {num_tasks * per_task:,} samples in {num_tasks} tasks "
          f"({time.time() - t0:.2f} s)")

    data = np.arange(8_000_000, dtype=np.float64)
    chunks = [rayx.put(c) for c in np.array_split(data, 16)]
    t0 = time.time()
    total = sum(rayx.get([chunk_sum_of_squares.remote(c) for c in chunks]))
    expected = float(np.dot(data, data))
    print(f"sum of squares of {data.size:,} floats via 16 tasks: {total:.6e} "
          f"(numpy says {expected:.6e}) in {time.time() - t0:.2f} s")
    assert abs(total - expected) / expected < 1e-9
    assert abs(pi - np.pi) < 0.01

    rayx.shutdown()
    print("done")


if __name__ == "__main__":
    main()
