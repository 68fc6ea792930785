"""Every production-log reader's rate (MB/s) and peak memory on a large file it generates, side by
side in one run.

    python benchmarks/readers_bench.py                     # ~1 GB of each format
    python benchmarks/readers_bench.py --mb 100            # smaller files
    python benchmarks/readers_bench.py --formats otlp,postgres-log

Formats, each mostly what real files are full of around a few start-ups:

- ``cloud-logging``: JSON lines of Cloud Run entries (``cloudlogging_bench.py``'s export: request
  logs and a ready instance's own lines, a crash-looping deploy every 300 s);
- ``cloud-logging-array``: the same as one JSON array (``gcloud logging read --format=json``);
- ``kubernetes``: one ``kubectl get events -o json`` List (indented as kubectl does): per block a
  crash-looping ReplicaSet's Events (tests/kubernetes_export.py) among 300 ``Pulled`` Events;
- ``otlp``: one OTLP/JSON document (an exporter's request body, no line breaks): per block the
  start-ups of tests/otlp_export.py's demo, each instance with 200 request spans;
- ``postgres-log``: a plain server log with ``log_connections``: per block tests/pglog_export.py's
  storm (pids and times shifted) among 400 statement lines.

Each file is read in a process of its own (``startsim calibrate``'s reader function), which prints
its own peak memory (max RSS) at the end; the file is deleted before the next is generated. Prints
figures; asserts nothing. The load average is printed: the figures depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

FORMATS = ("cloud-logging", "cloud-logging-array", "kubernetes", "otlp", "postgres-log")
READ = {
    "cloud-logging": (
        "from sim.calibrate.cloudlogging import read_cloud_logging as read\n"
        "runs = read(path, 'database=db', PATTERN)"
    ),
    "kubernetes": (
        "from sim.calibrate.crashloop import read_kubernetes as read\nruns = read([path])"
    ),
    "otlp": (
        "from sim.calibrate.otlp import read_otlp as read\n"
        "runs = read(path, 'before=config;database=db;after=warm')"
    ),
    "postgres-log": "from sim.calibrate.pglog import read_pg_log as read\nruns = read(path)",
}
READ["cloud-logging-array"] = READ["cloud-logging"]
CHILD = """
import resource, sys
from cloudlogging_export import PATTERN
path = sys.argv[1]
{read}
n = sum(len(r.attempts) + len(r.censored) for r in runs)
print(n, len(runs), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


# -- generators: each writes about ``mb`` MB and returns the objects (entries, items, spans,
# lines) written ----------------------------------------------------------------------------------


def cloud_logging(path: Path, mb: int, array: bool = False) -> int:
    from cloudlogging_bench import generate

    return generate(path, mb, array)


def kubernetes(path: Path, mb: int) -> int:
    from kubernetes_export import CONTAINER, _involved, crash_loop, event, events

    pods = crash_loop()
    block = events(pods)
    pulled = [
        event(
            f"p-{k}",
            _involved(pods[k % 2]),
            "Pulled",
            f'Container image "orders:{k}" already present on machine',
            [float(k)],
        )
        for k in range(300)
    ]
    text = ",\n".join(json.dumps(e, indent=4) for e in [*block, *pulled])
    rs = pods[0].replicaset.rpartition("-")[2]  # the ReplicaSet's hash, in every pod's name
    n, b, limit = 0, 0, mb * 1_000_000
    with open(path, "w") as f:
        f.write('{\n    "apiVersion": "v1",\n    "items": [\n')
        while f.tell() < limit:
            f.write((",\n" if b else "") + text.replace(rs, f"{b:09x}").replace(CONTAINER, "app"))
            n, b = n + len(block) + len(pulled), b + 1
        f.write('\n    ],\n    "kind": "List",\n    "metadata": {"resourceVersion": ""}\n}\n')
    return n


def otlp(path: Path, mb: int) -> int:
    from otlp_export import demo, span

    objs = [o for o in demo() if "resourceSpans" in o]
    n, b, limit = 0, 0, mb * 1_000_000
    with open(path, "w") as f:
        f.write('{"resourceSpans": [')
        while f.tell() < limit:
            for o in objs:
                rs = o["resourceSpans"][0]
                spans = rs["scopeSpans"][0]["spans"]
                trace = spans[0]["traceId"][:-8] + f"{b:08x}"
                t0 = int(spans[0]["startTimeUnixNano"]) + b * 300 * 10**9
                own = [
                    {
                        **s,
                        "traceId": trace,
                        "startTimeUnixNano": str(int(s["startTimeUnixNano"]) + b * 300 * 10**9),
                        "endTimeUnixNano": str(int(s["endTimeUnixNano"]) + b * 300 * 10**9),
                    }
                    for s in spans
                ]
                requests = [
                    span(f"{b:024x}{k:08x}", f"{k:016x}", "", "GET /orders", t0 + k, t0 + k + 9)
                    for k in range(200)
                ]
                attrs = [
                    {**kv, "value": {"stringValue": f"{kv['value']['stringValue']}-{b}"}}
                    if kv["key"] == "service.instance.id"
                    else kv
                    for kv in rs["resource"]["attributes"]
                ]
                one = {
                    "resource": {"attributes": attrs},
                    "scopeSpans": [
                        {"scope": rs["scopeSpans"][0]["scope"], "spans": own + requests}
                    ],
                }
                f.write(("," if n else "") + json.dumps(one, separators=(",", ":")))
                n += len(own) + len(requests)
            b += 1
        f.write("]}\n")
    return n


def postgres_log(path: Path, mb: int) -> int:
    from dataclasses import replace

    from pglog_export import lines, pg_time, storm

    n, b, limit = 0, 0, mb * 1_000_000
    with open(path, "w") as f:
        while f.tell() < limit:
            at = 12.0 * b
            conns = [replace(c, pid=c.pid + 1000 * (b % 30), at_s=c.at_s + at) for c in storm()]
            block = lines(conns)
            stamp = pg_time(at + 6.0)
            block += [
                f"{stamp} [{150 + k % 25}] LOG:  duration: 0.{k:03d} ms  statement: "
                f"SELECT id, status FROM orders WHERE id = {k}"
                for k in range(400)
            ]
            f.write("\n".join(block) + "\n")
            n, b = n + len(block), b + 1
    return n


GENERATE = {
    "cloud-logging": cloud_logging,
    "cloud-logging-array": lambda path, mb: cloud_logging(path, mb, array=True),
    "kubernetes": kubernetes,
    "otlp": otlp,
    "postgres-log": postgres_log,
}
SUFFIX = {"cloud-logging": ".jsonl", "postgres-log": ".log"}


def bench(fmt: str, mb: int, tmp: Path) -> str:
    path = tmp / f"{fmt}{SUFFIX.get(fmt, '.json')}"
    start = time.perf_counter()
    written = GENERATE[fmt](path, mb)
    made = time.perf_counter() - start
    size = path.stat().st_size / 1e6
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "tests")}
    code = CHILD.format(read=READ[fmt])
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - start
    path.unlink()
    if done.returncode != 0:
        return f"{fmt:<20} {size:>7.0f} MB: the reader failed: {done.stderr.strip()[-2000:]}"
    out = done.stdout.split()
    attempts, runs, rss_kb = (int(x) for x in out)
    return (
        f"{fmt:<20} {size:>7.0f} MB {written:>11,} objects (made in {made:>4.0f} s) → "
        f"{attempts:>7,} attempts in {runs:>5,} runs: {wall:>6.1f} s, {size / wall:>5.1f} MB/s, "
        f"peak memory {rss_kb / 1024:>5.0f} MB (max RSS)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1000, help="size of each generated file, MB")
    ap.add_argument("--formats", default=",".join(FORMATS), help=", ".join(FORMATS))
    args = ap.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        ap.error(f"unknown format(s) {', '.join(unknown)}: expected some of {', '.join(FORMATS)}")
    print(f"load average {os.getloadavg()[0]:.2f} at the start; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            print(bench(fmt, args.mb, Path(tmp)), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
