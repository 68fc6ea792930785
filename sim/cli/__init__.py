"""The ``startsim`` command line: an edge that parses options, calls the library, prints, and turns
every mistake of the user's into exit code 2 with one line on stderr (never a traceback).

One module per command; ``options`` holds what they share. Commands only parse, call and print:
the model lives in ``sim/``, the report writers in ``sim/report/``, the harness in ``loadtests/``.
"""

from __future__ import annotations

import shlex
import sys

import typer
from rich.console import Console
from rich.markup import escape

from sim.cli import (
    calibrate,
    diagnose,
    loadtest,
    recommend,
    rollout,
    sensitivity,
    simulate,
    sweep,
    validate,
)
from sim.cli.options import flag
from sim.errors import StartsimError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: flags show as flags, not "--json <bool>"
    help="Simulate, load-test and size the database path of a fleet that cold-starts at once.",
)
app.command("simulate")(simulate.simulate)
app.command("sweep")(sweep.sweep)
app.command("recommend")(recommend.recommend_cmd)
app.command("rollout")(rollout.rollout)
app.command("sensitivity")(sensitivity.sensitivity)
app.command("loadtest")(loadtest.loadtest)
app.command("loadtest-worker")(loadtest.loadtest_worker)
app.command("connector-emulator")(loadtest.connector_emulator)
app.command("scenarios")(simulate.list_scenarios)
app.command("calibrate")(calibrate.calibrate_cmd)
app.command("validate")(validate.validate_cmd)
app.command("diagnose")(diagnose.diagnose_cmd)

err = Console(stderr=True)


def main() -> None:
    """Console-script entry point: every mistake of the user's (startsim's own errors and the
    command line's usage errors alike) becomes one line on stderr and exit code 2, never a
    traceback; Ctrl-C becomes 130."""
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        _fail(_as_flag(exc))
    except StartsimError as exc:
        _fail(str(exc))
    except typer.TyperException as exc:  # the command line's: unknown option, bad value, …
        if not sys.argv[1:]:  # bare `startsim` (no_args_is_help): its help, as a usage error
            exc.show()
            sys.exit(2)
        _fail(_usage_message(exc), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    # Without standalone mode click returns, rather than raises, the code of typer.Exit (Ctrl-C
    # inside a command becomes Exit(130)): pass it on.
    if isinstance(code, int) and code:
        if code == 130:
            err.print("interrupted")
        sys.exit(code)


def _fail(message: str, code: int = 2) -> None:
    line = escape(" ".join(message.split()))
    err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _as_flag(exc: UsageError) -> str:
    """The library names a setting as its parameter (``target_success = 1.0: …``); here it is
    the flag the user typed (``--target-success 1.0: …``)."""
    if exc.option is None:
        return str(exc)
    if exc.value is None:
        return f"{flag(exc.option)}: {exc.problem}"
    v = exc.value
    value = f"{v:g}" if isinstance(v, float) else v if isinstance(v, int) else shlex.quote(str(v))
    return f"{flag(exc.option)} {value}: {exc.problem}"


def _usage_message(exc) -> str:
    """Click's message, with the value the user gave for a bad option (click names only the
    option), and where to look: ``--jobs 0: … (see 'startsim simulate --help')``."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    args = sys.argv[1:]
    for opt in getattr(getattr(exc, "param", None), "opts", ()):
        for i, arg in enumerate(args):
            if arg == opt and i + 1 < len(args):
                return f"{opt} {args[i + 1]}: {exc.message}{hint}"
            if arg.startswith(opt + "="):
                return f"{opt} {arg[len(opt) + 1 :]}: {exc.message}{hint}"
    return exc.format_message() + hint


__all__ = ["app", "main"]
