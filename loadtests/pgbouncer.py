"""A real PgBouncer in front of a campaign's database (``startsim loadtest --via-pgbouncer``).

startsim starts PgBouncer itself, configured from the scenario's ``[pooler]`` (PgBouncer's own
settings, docs/scenario.md#pooler), listening on a free loopback port only (no Unix socket), in
front of the address the campaign has checked and reached (:mod:`loadtests.safety`); the
instances then connect to it instead of the database. Its files live in a private temporary
folder: ``pgbouncer.ini`` and the ``auth_file`` (mode 0600), which holds the DSN's user and
password because PgBouncer authenticates the clients itself and logs in to the server with that
password. PgBouncer reads it when it starts (and again only on a reload, which nothing sends), so
it is deleted as soon as PgBouncer accepts connections. The password is never logged nor written
into the results: the campaign's folder gets
a copy of ``pgbouncer.ini`` (which names the auth file, never its contents) and PgBouncer's log.
:meth:`RunningPgBouncer.stop` stops it (SIGTERM: PgBouncer's immediate shutdown) and deletes the
folder; the campaign calls it on every way out, Ctrl-C included.

PgBouncer refuses to run as root: as root it runs as ``nobody`` (as the tests' throwaway
PostgreSQL does), its folder and files owned by that user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.children import die_with_parent
from loadtests.safety import Target, parsed_dsn
from sim.errors import UsageError
from sim.pooler import Pooler
from sim.records import Reason

SBIN = "/usr/sbin:/usr/local/sbin:/sbin"  # where Debian puts it, off a non-login user's PATH
INSTALL = "install it with `apt-get install pgbouncer` (Debian, Ubuntu), or put it on PATH"
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 10.0  # from exec to accepting TCP connections
STOP_GRACE_S = 5.0
START_TRIES = 3  # a free port found, then taken by another process before PgBouncer binds it
LOG_FILE = "pgbouncer.log"
INI_FILE = "pgbouncer.ini"
AUTH_FILE = "userlist.txt"
# PgBouncer's own errors reach the client as SQLSTATE 08P01 with a fixed message naming the rule
# (janitor.c, client.c); the ones a start-up meets, by their message.
POOLER_SQLSTATE = "08P01"
POOLER_REASONS = {
    "query_wait_timeout": Reason.QUERY_WAIT_TIMEOUT,
    "no more connections allowed (max_client_conn)": Reason.MAX_CLIENT_CONN,
}
# check_fast_fail's refusal names the cached server error before it: matched by its end.
LOGIN_RETRY_SUFFIX = "(server_login_retry)"


def pooler_reason(exc: BaseException) -> str | None:
    """The Reason of one of PgBouncer's own errors, or None for any other failure. asyncpg
    raises it as such at connect, and during a query as ConnectionDoesNotExistError caused by it
    (PgBouncer sends the error, then closes the connection)."""
    for err in (exc, exc.__cause__):
        if err is not None and (getattr(err, "sqlstate", "") or "") == POOLER_SQLSTATE:
            text = str(err).strip()
            if text.endswith(LOGIN_RETRY_SUFFIX):
                return Reason.SERVER_LOGIN_RETRY
            return POOLER_REASONS.get(text)
    return None


def dsn_user(dsn: str) -> str:
    """The user asyncpg logs in as for ``dsn``: the DSN's, else PGUSER, else the OS user (asyncpg's
    own parser, as :func:`loadtests.safety.resolve_dsn` uses it)."""
    return parsed_dsn(dsn)[1].user


def find_binary() -> str:
    """The ``pgbouncer`` program on PATH or in /usr/sbin; else :class:`UsageError` saying how to
    install it."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path=SBIN)
    if found is None:
        raise UsageError(f"--via-pgbouncer: no pgbouncer on PATH or in {SBIN}; {INSTALL}")
    return found


def version(binary: str) -> str:
    """``PgBouncer 1.18.0``: the first line of ``pgbouncer --version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return (out.stdout.strip().splitlines() or ["PgBouncer (unknown version)"])[0]


def _value(value: str | int | float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_ini(pooler: Pooler, port: int, upstream: Target, auth_type: str, auth_file: Path) -> str:
    """``pgbouncer.ini``: every database name goes to ``upstream`` (the ``*`` fallback entry),
    the scenario's settings under PgBouncer's own names, loopback only. No secret in it."""
    host, server_port = upstream.host, upstream.port
    if upstream.is_unix:  # PgBouncer takes the socket's folder and the port
        host = str(Path(upstream.host).parent)
    lines = [
        "; written by startsim loadtest --via-pgbouncer from the scenario's [pooler]",
        "[databases]",
        f"* = host={host} port={server_port}",
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        f"auth_type = {auth_type}",
        f"auth_file = {auth_file}",
        "ignore_startup_parameters = extra_float_digits",
        *(f"{name} = {_value(value)}" for name, value in pooler.settings().items()),
        "",
    ]
    return "\n".join(lines)


def render_userlist(user: str, password: str | None) -> str:
    """The auth file: one ``"user" "password"`` line, a double quote doubled inside."""

    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"{quoted(user)} {quoted(password or '')}\n"


def auth_type(password: str | None) -> str:
    """SCRAM with the DSN's password (PgBouncer logs in to the server with it), else trust."""
    return "scram-sha-256" if password else "trust"


@dataclass(frozen=True)
class RunAs:
    """Who runs PgBouncer: this process's user, or (as root) an unprivileged one."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_this_process(cls) -> RunAs:
        if os.geteuid() != 0:
            return cls()
        import pwd

        try:
            pw = pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError:
            raise UsageError(
                f"--via-pgbouncer: PgBouncer refuses to run as root, and there is no user "
                f"{UNPRIVILEGED_USER!r} to run it as; run startsim as another user"
            ) from None
        return cls(pw.pw_uid, pw.pw_gid)

    def own(self, *paths: Path) -> None:
        if self.uid is not None:
            for path in paths:
                os.chown(path, self.uid, self.gid)

    def popen_kwargs(self) -> dict:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass
class RunningPgBouncer:
    """A running PgBouncer: where it listens, and what to stop."""

    proc: subprocess.Popen
    folder: Path  # the private folder: ini and auth file; deleted by stop()
    target: Target  # 127.0.0.1 and its port: what the instances dial
    version: str
    settings: dict

    def describe(self) -> dict:
        """What campaign.json records of it: no secret."""
        return {
            "kind": "pgbouncer",
            "version": self.version,
            "listen": str(self.target),
            **self.settings,
        }

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM), then kill if it lingers; the folder goes either way."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start(
    pooler: Pooler,
    upstream: Target,
    user: str,
    password: str | None,
    run_dir: Path,
    secrets: tuple[str, ...] = (),
) -> RunningPgBouncer:
    """Start PgBouncer in front of ``upstream`` and wait until it accepts connections. Its log
    goes to ``run_dir/pgbouncer.log``, a copy of its ini to ``run_dir/pgbouncer.ini``."""
    binary = find_binary()
    runner = RunAs.for_this_process()
    # 0700; as root in /tmp, which the unprivileged user can reach (a TMPDIR under root's home
    # it could not)
    shared = "/tmp" if runner.uid is not None and Path("/tmp").is_dir() else None
    folder = Path(tempfile.mkdtemp(prefix="startsim-pgbouncer-", dir=shared))
    try:
        runner.own(folder)
        auth_file = folder / AUTH_FILE
        fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_userlist(user, password))
        runner.own(auth_file)
        for attempt in range(1, START_TRIES + 1):
            port = _free_port()
            ini = render_ini(pooler, port, upstream, auth_type(password), auth_file)
            (folder / INI_FILE).write_text(ini, encoding="utf-8")
            (run_dir / INI_FILE).write_text(ini, encoding="utf-8")
            runner.own(folder / INI_FILE)
            proc = _spawn(binary, folder / INI_FILE, run_dir / LOG_FILE, runner)
            try:
                if _accepting(proc, port, run_dir / LOG_FILE, secrets, attempt == START_TRIES):
                    auth_file.unlink()  # read at its start: the password is now in its memory only
                    target, settings = Target("127.0.0.1", port), pooler.settings()
                    return RunningPgBouncer(proc, folder, target, version(binary), settings)
            except BaseException:
                _kill(proc)
                raise
        raise AssertionError("unreachable: the last try returns or raises")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(binary: str, ini: Path, log: Path, runner: RunAs) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [binary, str(ini)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches startsim only; it stops PgBouncer
            preexec_fn=die_with_parent,
            **runner.popen_kwargs(),
        )


def _accepting(
    proc: subprocess.Popen, port: int, log: Path, secrets: tuple[str, ...], last: bool
) -> bool:
    """Wait until PgBouncer accepts TCP connections (True), or it exited because another process
    took the port first (False: try another, unless ``last``); else :class:`UsageError`."""
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            text = _tail(log, secrets)
            if "Address already in use" in text and not last:
                return False
            raise UsageError(
                f"--via-pgbouncer: PgBouncer exited with code {proc.returncode}: {text}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    raise UsageError(
        f"--via-pgbouncer: PgBouncer did not accept connections within {START_TIMEOUT_S:g} s: "
        f"{_tail(log, secrets)}"
    )


def _tail(log: Path, secrets: tuple[str, ...]) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " / ".join(text.strip().splitlines()[-3:]) or "(empty log)"


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
