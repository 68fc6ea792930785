"""Wall time and throughput of ``startsim recommend`` (default scenario) and of a 100-point sweep
with 2,000 replications per point, run as a user runs them: the installed command, every core.

    python benchmarks/recommend_bench.py            # both (the sweep takes several minutes)
    python benchmarks/recommend_bench.py --quick    # the recommend run only

Prints figures; asserts nothing. Throughput counts simulated instance starts (an instance's first
start, fleet size × replications per point) and start attempts (those plus restarts) per second of
wall time. Numbers depend on the machine and on what else runs on it: the load average is printed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUTS_S = "10,14,18,20,22,24,26,28,32,40"
FLEETS = "20,24,28,32,36,40,44,48,52,56"
REPLICATIONS = 2000


def run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(["startsim", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_recommend(folder: Path) -> dict:
    out = folder / "recommend"
    wall = run(["recommend", "--out", str(out)])
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    starts = data["simulated_instance_starts"]
    return {
        "what": "startsim recommend (staging-incident, defaults)",
        "wall_s": wall,
        "instance_starts": starts,
        "starts_per_s": starts / wall,
    }


def bench_sweep(folder: Path) -> dict:
    out = folder / "sweep"
    args = [
        "sweep",
        "--vary",
        f"startup.db_init_timeout_s={TIMEOUTS_S}",
        "--vary",
        f"fleet.instances={FLEETS}",
        "-n",
        str(REPLICATIONS),
        "--out",
        str(out),
    ]
    wall = run(args)
    with open(out / "sweep.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    starts = sum(int(r["fleet.instances"]) for r in rows) * REPLICATIONS
    attempts = sum(int(r["attempts"]) for r in rows)
    return {
        "what": f"startsim sweep, {len(rows)} points x {REPLICATIONS} replications",
        "wall_s": wall,
        "instance_starts": starts,
        "starts_per_s": starts / wall,
        "start_attempts": attempts,
        "attempts_per_s": attempts / wall,
    }


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_recommend(Path(tmp))]
        print(json.dumps(results[-1]), flush=True)
        if not quick:
            results.append(bench_sweep(Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for r in results:
        print(
            f"{r['what']}: {r['wall_s']:.1f} s wall, {r['instance_starts']:,} instance starts, "
            f"{r['starts_per_s']:,.0f} starts/s"
        )


if __name__ == "__main__":
    main()
