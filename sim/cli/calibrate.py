"""``startsim calibrate``: campaigns and production logs in, a commented scenario TOML out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sim import scenario as scenarios
from sim.cli.options import Confidence, Json, Seed, command_line
from sim.output import atomic_write

if TYPE_CHECKING:  # sim.calibrate loads scipy.stats (0.6 s): only the commands that use it do
    from sim.calibrate import Calibration
    from sim.calibrate.inputs import Run

Inputs = Annotated[
    list[Path],
    typer.Argument(
        help="Campaign folders (startsim loadtest) and/or start-up logs (CSV, JSONL, a "
        "Cloud Logging export, Kubernetes events and pod status, OTLP traces, a PostgreSQL "
        "server log: docs/formats.md)."
    ),
]
FORMATS = ("auto", "startup-log", "cloud-logging", "kubernetes", "otlp", "postgres-log")
Format = Annotated[
    str,
    typer.Option(
        "--format",
        metavar="auto|startup-log|cloud-logging|kubernetes|otlp|postgres-log",
        help="How to read the files: auto (from their content), startup-log (our CSV / JSON "
        "lines), cloud-logging (gcloud logging read --format=json, array or JSON lines), "
        "kubernetes (kubectl get events / pods -o json, directly or through Cloud Logging), otlp "
        "(OpenTelemetry OTLP/JSON traces), postgres-log (a PostgreSQL server log).",
    ),
]
PhasesOption = Annotated[
    str | None,
    typer.Option("--phases", help="Which named phases of a log form each part (as calibrate)."),
]
PhasePatternOption = Annotated[
    str | None,
    typer.Option(
        "--phase-pattern",
        metavar="REGEX",
        help="Cloud Logging: the service's phase messages, with named groups phase and seconds "
        "(or ms, or edge start|end), e.g. 'phase (?P<phase>\\w+) took (?P<seconds>[0-9.]+) s'.",
    ),
]
StartupSpanOption = Annotated[
    str | None,
    typer.Option(
        "--startup-span",
        metavar="NAME",
        help="OTLP traces: the name of the start-up span (default 'startup'); its child "
        "spans are the phases named in --phases.",
    ),
]
LogLinePrefixOption = Annotated[
    str | None,
    typer.Option(
        "--log-line-prefix",
        metavar="PREFIX",
        help="PostgreSQL logs: the server's log_line_prefix (default '%m [%p] '); %m %t %n %p "
        "%h %u %d %a are read, other escapes skipped.",
    ),
]


def read_inputs(
    paths: list[Path],
    phases: str | None = None,
    fmt: str = "auto",
    phase_pattern: str | None = None,
    startup_span: str | None = None,
    log_line_prefix: str | None = None,
) -> list[Run]:
    """Folders are campaigns, files are production logs: Cloud Logging exports when their
    content says so (or ``fmt`` does), else our own CSV / JSON-lines layout."""
    from sim.calibrate import cloudlogging, otlp, pglog
    from sim.calibrate.inputs import read_campaign, read_log

    if fmt not in FORMATS:
        from sim.errors import UsageError

        raise UsageError(f"expected one of {', '.join(FORMATS)}", "format", fmt)
    runs: list[Run] = []
    cloud = False
    k8s = [p for p in paths if not p.is_dir() and _is_kubernetes(p, fmt)]
    for path in paths:
        if path.is_dir():
            runs.append(read_campaign(path, phases))
        elif path in k8s:
            continue  # read together below: events and pod status join
        elif fmt == "otlp" or (fmt == "auto" and otlp.detect(path)):
            with _bytes_bar(path) as bar:
                runs += otlp.read_otlp(
                    path, phases, startup_span, lambda at: bar.update(at - bar.n)
                )
        elif fmt == "postgres-log" or (fmt == "auto" and pglog.detect(path, log_line_prefix)):
            with _bytes_bar(path) as bar:
                runs += pglog.read_pg_log(path, log_line_prefix, lambda at: bar.update(at - bar.n))
        elif fmt == "cloud-logging" or (fmt == "auto" and cloudlogging.detect(path)):
            cloud = True
            with _bytes_bar(path) as bar:
                runs += cloudlogging.read_cloud_logging(
                    path, phases, phase_pattern, lambda at: bar.update(at - bar.n)
                )
        else:
            if fmt == "auto":
                cloudlogging.refuse_unknown(path)
            runs += read_log(path, phases)
    if k8s:
        from sim.calibrate.crashloop import read_kubernetes

        bars = {p: _bytes_bar(p) for p in k8s}
        try:
            runs += read_kubernetes(k8s, lambda p, at: bars[p].update(at - bars[p].n))
        finally:
            for bar in bars.values():
                bar.close()
    if phase_pattern is not None and not cloud:
        from sim.errors import UsageError

        raise UsageError(
            "only Cloud Logging exports are read with it; none of the inputs is one",
            "phase_pattern",
            phase_pattern,
        )
    return runs


def _is_kubernetes(path: Path, fmt: str) -> bool:
    from sim.calibrate import kubernetes

    return fmt == "kubernetes" or (fmt == "auto" and kubernetes.detect(path))


def _bytes_bar(path: Path):
    """A bar of bytes read, on stderr, shown only on a terminal (large exports take minutes)."""
    import sys

    from tqdm import tqdm

    size = path.stat().st_size if path.is_file() else None
    return tqdm(
        total=size,
        desc=f"reading {path.name}",
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=None,
        leave=False,
    )


def calibrate_cmd(
    inputs: Inputs,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Scenario for what the inputs cannot tell (default: the "
            "first campaign's own scenario, else staging-incident).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="The calibrated scenario to write.")] = Path(
        "calibrated.toml"
    ),
    phases: Annotated[
        str | None,
        typer.Option(
            "--phases",
            help="Which named phases of a log form each part, e.g. "
            "'before=config,secrets;database=db;after=warm' or just 'database=db'; "
            "'queries=NAME' marks database phases that are the init queries "
            "(startup.init_queries_s).",
        ),
    ] = None,
    fmt: Format = "auto",
    phase_pattern: PhasePatternOption = None,
    startup_span: StartupSpanOption = None,
    log_line_prefix: LogLinePrefixOption = None,
    confidence: Confidence = 0.95,
    replications: Annotated[
        int,
        typer.Option(
            "--replications", "-n", min=1, help="Replications per candidate in the connector fit."
        ),
    ] = 20,
    seed: Seed = 0,
    json_out: Json = False,
) -> None:
    """Fit the scenario's durations, connector and server from measurements; write a TOML."""
    from sim.calibrate import calibrate
    from sim.calibrate.toml import render

    runs = read_inputs(inputs, phases, fmt, phase_pattern, startup_span, log_line_prefix)
    base_sc = scenarios.resolve(base) if base is not None else None
    cal = calibrate(runs, base_sc, confidence=confidence, replications=replications, seed=seed)
    text = render(cal, command_line())
    if out.exists() and out.is_dir():
        from sim.errors import UsageError

        raise UsageError("is a folder; give a file name", "out", str(out))
    atomic_write(out, text)
    if json_out:  # one JSON object on stdout, nothing else there
        from sim.output import dumps

        print(dumps({**cal.as_dict(), "out": str(out)}))
    else:
        console = Console()
        console.print(table(cal))
        if cal.monitoring:
            console.print(monitoring_table(cal.monitoring))
    for note in cal.notes:
        Console(stderr=True).print(f"note: {note}", highlight=False)
    Console(stderr=True).print(f"wrote {out}", highlight=False)


def table(cal: Calibration) -> Table:
    t = Table(title=f"calibrated from {', '.join(cal.runs)}", title_justify="left")
    for col in ("field", "value", "interval", "n", "source; fit"):
        t.add_column(col, overflow="fold")
    for e in cal.estimates:
        value = "not identifiable" if e.value is None else _short(e.value)
        t.add_row(e.field, value, e.interval(), str(e.n), f"{e.source}; {e.quality}")
    if cal.db_init is not None:
        t.add_row(
            "(database init)",
            _short(cal.db_init.chosen),
            "",
            str(cal.db_init.n),
            cal.db_init.quality(),
        )
    return t


def _short(value) -> str:
    if isinstance(value, dict):
        if value.get("dist") == "empirical":
            return f"empirical ({len(value['values'])} values)"
        return ", ".join(f"{k} {v}" for k, v in value.items() if k != "dist").join(
            (f"{value['dist']}(", ")")
        )
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def monitoring_table(windows) -> Table:
    """What monitoring would have shown, per window (a revision, then the whole export)."""
    t = Table(title="as monitoring counts", title_justify="left")
    for col in ("window", "span", "starts", "ready", "failed", "censored", "before window"):
        t.add_column(col, overflow="fold")
    t.add_column("starts/instance")
    t.add_column("restart delay", overflow="fold")
    for m in windows:
        fails = ", ".join(f"{k} {n}" for k, n in m.failures.items()) or "0"
        d = m.delay_summary()
        delay = (
            "—"
            if d is None
            else f"median {d['median']:.3g} s, IQR [{d['q1']:.3g}, {d['q3']:.3g}], n {d['n']}"
        )
        spi = m.starts_per_instance
        t.add_row(
            m.window,
            f"{m.span_s:.0f} s",
            f"{m.starts} ({m.why()})",
            str(m.ready),
            f"{m.failed} ({fails})",
            str(m.censored),
            str(m.dropped),
            f"mean {sum(spi) / len(spi):.3g}, max {max(spi)}",
            delay,
        )
    return t
