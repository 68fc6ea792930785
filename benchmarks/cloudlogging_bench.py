"""The Cloud Logging reader's rate (MB/s) and peak memory on a large export it generates.

    python benchmarks/cloudlogging_bench.py              # a 1 GB export of JSON lines
    python benchmarks/cloudlogging_bench.py --mb 100     # a smaller one
    python benchmarks/cloudlogging_bench.py --array      # a JSON array instead

The export is mostly what real ones are full of (request logs, and a ready instance's own lines,
each one per 100 ms), with a crash-looping deploy (tests/cloudlogging_export.py's) every 300 s.
The reader runs in a process of its own; its peak memory is that process's max RSS. Prints
figures; asserts nothing. The load average is printed: numbers depend on what else runs on the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cloudlogging_export import BASE_NS, STDOUT, Ids, crash_loop, entry, export, noise

READ = """
import sys
from sim.calibrate.cloudlogging import read_cloud_logging
runs = read_cloud_logging(sys.argv[1], "database=db", sys.argv[2])
print(sum(len(r.attempts) for r in runs), len(runs))
"""


def generate(path: Path, mb: int, array: bool) -> int:
    """Write about ``mb`` MB; returns the entries written."""
    ids, n, t, limit = Ids(), 0, 0.0, mb * 1_000_000
    with open(path, "w") as f:
        f.write("[\n" if array else "")
        while f.tell() < limit:
            revision = f"orders-api-{int(t):08d}-kip"
            boots = crash_loop(revision, t)
            block = export(boots, newest_first=False)
            block += [noise(t + 0.05 * k, ids)[0] for k in range(3000)]  # request logs
            chatty = boots[-1]  # a ready instance that logs on, every 0.1 s
            block += [
                entry(BASE_NS + round((t + 60 + 0.1 * k) * 1e9), msg, chatty, STDOUT, ids)
                for k in range(3000)
                for msg in ["handled GET /orders in 12 ms"]
            ]
            for e in block:
                f.write(("," if array and n else "") + json.dumps(e) + "\n")
                n += 1
            t += 300.0
        f.write("]\n" if array else "")
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--array", action="store_true")
    args = ap.parse_args()
    from cloudlogging_export import PATTERN

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("export.json" if args.array else "export.jsonl")
        start = time.perf_counter()
        entries = generate(path, args.mb, args.array)
        made = time.perf_counter() - start
        size = path.stat().st_size / 1e6
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", READ, str(path), PATTERN],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        wall = time.perf_counter() - start
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    kind = "JSON array" if args.array else "JSON lines"
    print(f"load average {os.getloadavg()[0]:.2f}; generated {size:.0f} MB in {made:.0f} s")
    print(
        f"{kind}: {size:.0f} MB, {entries:,} entries → {out[0]} attempts in {out[1]} runs: "
        f"{wall:.1f} s, {size / wall:.1f} MB/s, peak memory {rss_mb:.0f} MB (max RSS)"
    )


if __name__ == "__main__":
    main()
