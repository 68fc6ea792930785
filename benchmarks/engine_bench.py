"""The three engines side by side on the same scenarios and replications: a SimPy model of the same
rules (tests/reference_simpy.py), the readable engine (sim/engine.py) and the fast engine
(sim/fast/), then ``startsim recommend`` and the 100-point sweep with each engine.

    .venv/bin/python benchmarks/engine_bench.py            # everything (about ten minutes)
    .venv/bin/python benchmarks/engine_bench.py --quick    # a tenth of the replications, no sweep
    .venv/bin/python benchmarks/engine_bench.py --compare 0b591ca   # the fast engine: REV vs here

``--compare REV`` puts the fast engine of commit REV (``git archive`` into a temporary folder,
its kernel compiled into its own cache) beside this tree's, without traffic, process by process in
alternation (``--rounds``, default 5), and adds this tree's rows with ``[traffic]`` on.

Runs keep no attempt records (``records=False``, what ``startsim simulate`` does without
``--out``): the summary comes from each replication's counts. The streaming row runs a million
replications of the default scenario that way; the rare-event rows put importance sampling
(sim.rare) and plain Monte Carlo side by side at a share near 1e-4.

Every run is its own process, so peak memory (max RSS) is that run's alone; the fast engine's
kernel is compiled (cached) before timing. Prints a Markdown table; asserts nothing. Figures depend
on the machine and what else runs on it: the load average is printed.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BURST = {
    "name": "burst-10k",
    "horizon_s": 600.0,
    "fleet": {"instances": 10_000, "arrival": "burst"},
    "pool": {"min_size": 1, "max_size": 5, "held_when_ready": 1, "connect_timeout_s": 60.0},
    "connector": {"min_instances": 10, "max_instances": 10, "setups_per_instance": 1000},
    "database": {"max_connections": 20_000},
}


# Traffic after ready (docs/model.md): the scenario with requests on, for the rows with traffic.
TRAFFIC = {
    "capacity-storm+traffic": ("capacity-storm", {"traffic.rate_per_s": 10.0}),
    "capacity-storm+traffic/instance": (
        "capacity-storm",
        {"traffic.rate_per_instance_per_s": 0.25, "pool.growth": "background"},
    ),
}


# A pooler in front of the database (docs/model.md): the storm through PgBouncer in transaction
# mode, its 200 connections as clients of a pool of 20 server connections.
POOLER = {
    "capacity-storm+pgbouncer": (
        "capacity-storm",
        {
            "pooler.kind": "pgbouncer",
            "pooler.pool_mode": "transaction",
            "pooler.max_client_conn": 400,
            "pooler.query_wait_timeout": 5.0,
        },
    ),
}


def scenario(name: str):
    from sim.scenario import from_dict, resolve

    if name in TRAFFIC or name in POOLER:
        base, overrides = {**TRAFFIC, **POOLER}[name]
        return resolve(base).in_model_terms().with_overrides(overrides)
    return from_dict(BURST, "bench") if name == "burst-10k" else resolve(name)


def worker(engine: str, name: str, replications: int, jobs: int) -> dict:
    """One engine, one scenario, in this process: wall time, instance starts, peak memory."""
    sys.path.insert(0, str(ROOT / "tests"))
    sc = scenario(name)
    if engine == "fast":  # compile (or load the cached kernel) before the clock starts
        from sim import fast

        fast.run_chunk(sc, 0, range(1))
    start, cpu = time.perf_counter(), time.process_time()
    if engine == "simpy":
        import reference_simpy

        attempts = sum(len(reference_simpy.run(sc, i).attempts) for i in range(replications))
    else:
        from sim.runner import simulate

        res = simulate(sc, replications, 0, jobs=jobs, engine=engine, records=False)
        attempts = int(res.fleet["attempts"].sum())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    requests = 0
    if engine == "fast" and name in TRAFFIC:  # counted again, untimed: no summary keeps them
        from sim import fast
        from sim.fast.layout import FLEET

        _, rows = fast.run_raw(sc, 0, range(replications), keep=False)
        requests = int(rows[FLEET.index("requests")].sum())
    starts = sc.fleet.instances * replications
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "engine": engine,
        "scenario": name,
        "replications": replications,
        "jobs": jobs,
        "wall_s": wall,
        "cpu_s": cpu,  # this process's processor time: what other loads on the machine change least
        "instance_starts": starts,
        "starts_per_s": starts / wall,
        "attempts": attempts,
        "requests": requests,
        "peak_mb": max(peak_mb, children),
        "sim": sys.modules["sim"].__file__,
    }


def run_worker(*args, tree: Path = ROOT) -> dict:
    """One worker process, importing ``sim`` from ``tree`` (this one, or an older commit's)."""
    cmd = [sys.executable, __file__, "--worker", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[2:])} in {tree} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(result["sim"]).resolve().parent.parent != tree.resolve():
        raise RuntimeError(f"the worker imported sim from {result['sim']}, not from {tree}")
    return result


def streaming_row(replications: int) -> list[str]:
    """A million replications, two processes, no records: wall time and peak memory."""
    r = run_worker("fast", "capacity-storm", replications, 2)
    row = (
        f"| capacity-storm, no records | fast | 2 | {replications:,} | {r['wall_s']:.1f} | "
        f"{r['starts_per_s']:,.0f} | | | {r['peak_mb']:.0f} |"
    )
    print(row, flush=True)
    return [row]


RARE_TIMEOUT_S = 29.5  # P(start attempt fails) about 1.3e-4 on capacity-storm


def rare_table(quick: bool) -> list[str]:
    """Importance sampling against plain Monte Carlo at a share near 1e-4, one process each."""
    from sim.rare import estimate_failure
    from sim.scenario import resolve

    sc = resolve("capacity-storm").with_overrides({"startup.db_init_timeout_s": RARE_TIMEOUT_S})
    estimate_failure(sc, 2, tilt=0.0, engine="fast")  # load the kernel before the clock starts
    rows = [
        "| estimator | replications | estimate | 95 % interval | relative half-width | "
        "effective size | failing replications | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    scale = 4 if quick else 1
    for tilt, n in ((None, 12_000 // scale), (0.0, 12_000 // scale), (0.0, 40_000 // scale)):
        start = time.perf_counter()
        e = estimate_failure(sc, n, seed=0, tilt=tilt, engine="fast")
        wall = time.perf_counter() - start
        rows.append(
            f"| {e.estimator} | {n:,} | {e.estimate:.3g} | [{e.ci_low:.3g}, {e.ci_high:.3g}] | "
            f"{e.relative_half_width:.1%} | {e.effective_replications:,.0f} | "
            f"{e.event_replications} | {wall:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def cli(args: list[str]) -> float:
    start = time.perf_counter()
    exe = Path(sys.executable).parent / "startsim"
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


# Replications per scenario, the same for every engine and process count (the issue's "equal
# replications"): enough that the fast engine's fixed costs (a process pool, buffers) are small.
REPLICATIONS = {
    "capacity-storm": 5_000,
    "capacity-storm+pgbouncer": 5_000,
    "gang-allocation": 5_000,
    "burst-10k": 40,
}
# The burst's throughput on its own (the 5 million starts per second): the fast engine
# alone, sustained for a few seconds, so that starting the process pool (about 0.05 s) does not
# count.
THROUGHPUT = {"burst-10k": 2000}


def engines_table(quick: bool) -> list[str]:
    rows = [
        "| scenario | engine | processes | replications | wall s | instance starts/s | "
        "fast ÷ SimPy | fast ÷ readable | peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n in REPLICATIONS.items():
        n = n // 10 if quick else n
        runs = {e: run_worker(e, name, n, 1) for e in ("simpy", "reference", "fast")}
        runs["fast ×2"] = run_worker("fast", name, n, 2)
        if name in THROUGHPUT:
            big = THROUGHPUT[name] // 2 if quick else THROUGHPUT[name]
            runs["fast ×2, throughput"] = run_worker("fast", name, big, 2)
        base = {e: runs[e]["starts_per_s"] for e in ("simpy", "reference")}
        for label, r in runs.items():
            ratios = ("", "")
            if label.startswith("fast") and r["replications"] == n:
                ratios = (
                    f"{r['starts_per_s'] / base['simpy']:.0f}×",
                    f"{r['starts_per_s'] / base['reference']:.0f}×",
                )
            rows.append(
                f"| {name} | {label.split()[0]} | {r['jobs']} | {r['replications']} | "
                f"{r['wall_s']:.2f} | {r['starts_per_s']:,.0f} | {ratios[0]} | {ratios[1]} | "
                f"{r['peak_mb']:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows


def commands_table(quick: bool) -> list[str]:
    rows = ["| command | engine | wall s |", "|---|---|---|"]
    runs = [("recommend", ["recommend", "--out"])]
    if not quick:
        runs.append(("sweep 100 points × 2,000", ["sweep", *SWEEP, "--out"]))
    import tempfile

    for label, args in runs:
        for engine in ("reference", "fast"):
            with tempfile.TemporaryDirectory() as tmp:
                wall = cli([*args, tmp, "--engine", engine])
            rows.append(f"| {label} | {engine} | {wall:.1f} |")
            print(rows[-1], flush=True)
    return rows


SWEEP = [
    "--vary",
    "startup.db_init_timeout_s=10,14,18,20,22,24,26,28,32,40",
    "--vary",
    "fleet.instances=20,24,28,32,36,40,44,48,52,56",
    "-n",
    "2000",
]


# The fast engine without traffic, before and after: replications per scenario (a second or so).
COMPARE = {"capacity-storm": 50_000, "gang-allocation": 50_000, "burst-10k": 400}
TRAFFIC_REPLICATIONS = 5_000


def _commit(rev: str, tree: Path = ROOT) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", rev], check=True, capture_output=True
    )
    return out.stdout.decode().strip()


def compare_table(rev: str, rounds: int, quick: bool) -> list[str]:
    """The fast engine of ``rev`` and of this tree, no traffic, one process each run, in
    alternation (ABBA: each round swaps which goes first). Timed in processor seconds (the worker
    process's, in one process): on a machine others share, wall time moves with their load far
    more than processor time does. The fastest and the median over ``rounds``, instance starts per
    processor second at the fastest, and this tree's change, fastest against fastest and median
    against median. Then this tree with traffic on."""
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "sim"],
        check=True,
        capture_output=True,
    ).stdout.strip()
    old_name, here = _commit(rev), f"{_commit('HEAD')}{' + changes' if dirty else ''}"
    print(f"fast engine, one process, no records: {old_name} against {here}", flush=True)
    rows = [
        f"| scenario | replications | {old_name} cpu s, fastest (median) | "
        f"{here} cpu s, fastest (median) | {old_name} starts/s | {here} starts/s | "
        "change, fastest | change, median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print(*rows, sep="\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="startsim-bench-") as tmp:
        old = Path(tmp)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        trees = {"old": old, "new": ROOT}
        for name, n in COMPARE.items():
            n = n // 10 if quick else n
            for tree in trees.values():  # compile or load each kernel once, untimed
                run_worker("fast", name, 1, 1, tree=tree)
            cpu: dict[str, list[float]] = {"old": [], "new": []}
            for i in range(rounds):
                for label in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    cpu[label].append(run_worker("fast", name, n, 1, tree=trees[label])["cpu_s"])
            best = {k: min(v) for k, v in cpu.items()}
            med = {k: statistics.median(v) for k, v in cpu.items()}
            starts = n * scenario(name).fleet.instances
            rows.append(
                f"| {name} | {n:,} | {best['old']:.3f} ({med['old']:.3f}) | "
                f"{best['new']:.3f} ({med['new']:.3f}) | {starts / best['old']:,.0f} | "
                f"{starts / best['new']:,.0f} | {best['new'] / best['old'] - 1:+.1%} | "
                f"{med['new'] / med['old'] - 1:+.1%} |"
            )
            print(rows[-1], flush=True)
    traffic = [
        "",
        "| scenario (this tree, traffic on) | replications | cpu s | instance starts/s | "
        "requests | requests/s |",
        "|---|---|---|---|---|---|",
    ]
    print(*traffic, sep="\n", flush=True)
    for name in TRAFFIC:
        n = TRAFFIC_REPLICATIONS // 10 if quick else TRAFFIC_REPLICATIONS
        run_worker("fast", name, 1, 1)
        r = min((run_worker("fast", name, n, 1) for _ in range(3)), key=lambda r: r["cpu_s"])
        traffic.append(
            f"| {name} | {n:,} | {r['cpu_s']:.3f} | {r['instance_starts'] / r['cpu_s']:,.0f} | "
            f"{r['requests']:,} | {r['requests'] / r['cpu_s']:,.0f} |"
        )
        print(traffic[-1], flush=True)
    return rows + traffic


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        engine, name, reps, jobs = sys.argv[2:6]
        print(json.dumps(worker(engine, name, int(reps), int(jobs))))
        return
    quick = "--quick" in sys.argv[1:]
    if "--compare" in sys.argv[1:]:
        rev = sys.argv[sys.argv.index("--compare") + 1]
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 5
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        compare_table(rev, rounds, quick)
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average before: {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    engines_table(quick)
    if not quick:
        streaming_row(1_000_000)
    rare_table(quick)
    commands_table(quick)


if __name__ == "__main__":
    main()
