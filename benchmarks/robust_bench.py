"""Wall time and peak memory of ``startsim recommend`` on the default scenario at its assumed
values (today's single-world decision) and judged across worlds (``--worlds 64`` and a larger
design), run as a user runs them: the installed command, every core, the fast engine.

    python benchmarks/robust_bench.py                 # 64 and 256 worlds
    python benchmarks/robust_bench.py --worlds 64     # one design size

A first run, not timed, warms the kernel's compiled cache. Prints figures; asserts nothing. Peak
memory is the largest resident set of the command and of its worker processes (``wait4``'s
``ru_maxrss``, kB on Linux). Numbers depend on the machine and on what else runs on it: the load
average is printed before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident set (MiB) of one ``startsim`` command."""
    start = time.perf_counter()
    # The interpreter running this script, not whatever `startsim` is on PATH.
    command = [sys.executable, "-c", "from sim.cli import main; main()", *args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"startsim {' '.join(args)} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def bench(folder: Path, worlds: int) -> dict:
    out = folder / f"worlds-{worlds}"
    args = ["recommend", "--engine", "fast", "--out", str(out)]
    if worlds:
        args += ["--worlds", str(worlds)]
    wall, rss = run(args)
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    robust = [c["robust"] for c in data["candidates"] if "robust" in c]
    cap = data["robust"]["looks"][-1] if worlds else 0
    return {
        "worlds": worlds,
        "uncertain_fields": len(data["robust"]["fields"]) if worlds else 0,
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(rss, 1),
        "options": len(data["candidates"]),
        "world_replications": sum(r["replications"] for r in robust),
        # every world of every option at the sequential rule's cap: what no screening would spend
        "exhaustive_replications": len(robust) * worlds * cap,
        "instance_starts": data["simulated_instance_starts"],
        "decision": data["decision"]["configuration"],
    }


def main() -> None:
    sizes = [64, 256]
    if "--worlds" in sys.argv:
        sizes = [int(sys.argv[sys.argv.index("--worlds") + 1])]
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run(["recommend", "--engine", "fast", "--out", str(Path(tmp) / "warm")])
        rows = [bench(Path(tmp), w) for w in (0, *sizes)]
    for r in rows:
        print(json.dumps(r), flush=True)
    print(f"load average after: {os.getloadavg()}")
    base = rows[0]["wall_s"]
    for r in rows:
        what = "single world (today)" if not r["worlds"] else f"{r['worlds']} worlds"
        print(
            f"{what}: {r['wall_s']:.1f} s wall ({r['wall_s'] / base:.2f}x today's), "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB, {r['options']} options"
            + (
                f", {r['world_replications']:,} world replications of "
                f"{r['exhaustive_replications']:,} at the cap"
                if r["worlds"]
                else ""
            )
        )


if __name__ == "__main__":
    main()
