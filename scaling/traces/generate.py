"""Writes the grid's CSV traces (`sluice simulate --grid`): arrival_seconds,duration_seconds.

Three shapes a sluice deployment sees, made here because no public trace of ML job arrivals can be
downloaded at test time. Deterministic: `python3 scaling/traces/generate.py` rewrites the same files.
"""

import math
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def lognormal(rng, mean, sigma=0.5):
    mu = math.log(mean) - sigma * sigma / 2
    return rng.lognormvariate(mu, sigma)


def write(name, about, jobs):
    jobs.sort()
    with open(os.path.join(HERE, name), "w") as f:
        f.write(f"# {about}\n")
        f.write("arrival_seconds,duration_seconds\n")
        for t, d in jobs:
            f.write(f"{t:.3f},{d:.3f}\n")


def batch_night(rng):
    jobs = []
    # A scheduled script submits 1,500 jobs at about 25 a second, and 300 more two hours later.
    for start, count in ((600.0, 1500), (7800.0, 300)):
        t = start
        for _ in range(count):
            t += rng.expovariate(25.0)
            jobs.append((t, lognormal(rng, 45.0)))
    # Interactive submits through the night.
    t = 0.0
    while True:
        t += rng.expovariate(1 / 120.0)
        if t > 3 * 3600:
            break
        jobs.append((t, lognormal(rng, 45.0)))
    return jobs


def api_bursty(rng):
    jobs = []
    for _ in range(40):
        start = rng.uniform(0, 2 * 3600)
        size = int(rng.paretovariate(1.2) * 5)
        size = min(size, 150)
        width = rng.uniform(0, 20)
        for _ in range(size):
            jobs.append((start + rng.uniform(0, width), lognormal(rng, 8.0)))
    return jobs


def gpu_long(rng):
    jobs = []
    for wave in (0.0, 1800.0, 5400.0):
        for _ in range(40):
            jobs.append((wave + rng.uniform(0, 30), rng.uniform(240, 720)))
    return jobs


if __name__ == "__main__":
    rng = random.Random(20261201)
    write("batch-night.csv", "a nightly batch of 1,500 jobs at ~25/s, 300 more 2 h later, interactive jobs between; ~45 s each", batch_night(rng))
    write("api-bursty.csv", "40 clusters of 5-150 jobs within 0-20 s over 2 h (Pareto sizes); ~8 s each", api_bursty(rng))
    write("gpu-long.csv", "3 waves of 40 jobs (t = 0, 30 min, 90 min), 4-12 min each", gpu_long(rng))
