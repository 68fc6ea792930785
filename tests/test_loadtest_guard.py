"""The loopback guard: the target checked is the target dialled, whatever the DSN, its query, the
environment or a service file say.

Nothing here ever dials a non-loopback address. Resolution is tested without connecting: names go
through a fake resolver, IP literals through ``getaddrinfo`` with ``AI_NUMERICHOST`` (no DNS).
The end-to-end refusals run ``startsim`` inside ``unshare -n``, a network namespace with only
loopback, so nothing could leave the machine even if the guard failed.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from asyncpg import connect_utils
from throwaway_pg import PASSWORD

from loadtests import safety
from sim.errors import TargetError, UsageError

NAMES = {
    "db.local-alias": ["127.0.0.1", "::1"],
    "db.mixed": ["127.0.0.1", "10.9.8.7"],
    "db.staging": ["10.20.0.5"],
}


def fake_resolver(host, port, type=0, **_kw):
    """Known names from NAMES; everything else must be a numeric address (never a DNS query)."""
    if host in NAMES:
        return [(socket.AF_INET, type, 6, "", (ip, port)) for ip in NAMES[host]]
    if host in ("nowhere.invalid",):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return socket.getaddrinfo(host, port, type=type, flags=socket.AI_NUMERICHOST)


def resolve(dsn: str, allowed=()) -> list[str]:
    return [str(t) for t in safety.resolve_dsn(dsn, list(allowed), fake_resolver).targets]


@pytest.fixture(autouse=True)
def clean_pg_env(monkeypatch, tmp_path):
    """No PG* variable or service file of the machine leaks into these tests."""
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGSERVICEFILE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass, no ~/.pg_service.conf


# -- the bypasses of issue 7 ----------------------------------------------------------------------
def test_a_query_host_is_what_is_checked():
    with pytest.raises(TargetError, match=r"--dsn \?host = '10\.0\.0\.5': not loopback"):
        resolve("postgresql://app:PW@/postgres?host=10.0.0.5")


def test_pghost_is_what_is_checked(monkeypatch):
    monkeypatch.setenv("PGHOST", "10.0.0.5")
    with pytest.raises(TargetError, match=r"PGHOST = '10\.0\.0\.5': not loopback"):
        resolve("postgresql://app:PW@/postgres")


def test_every_host_of_a_multi_host_list_is_checked():
    with pytest.raises(TargetError, match=r"'10\.0\.0\.5'.*--allow-target 10\.0\.0\.5"):
        resolve("postgresql://app@127.0.0.1:5432,10.0.0.5:5432/postgres")
    dsn = "postgresql://app@127.0.0.1:5432,[::1]:6000/postgres"
    try:
        urlsplit(dsn)
    except ValueError:  # this Python's urllib (and so asyncpg) refuses it: a clear usage error
        with pytest.raises(UsageError, match="Invalid IPv6 URL"):
            resolve(dsn)
    else:
        assert resolve(dsn) == ["127.0.0.1:5432", "[::1]:6000"]


def test_pgport_and_query_port_are_what_is_dialled(monkeypatch):
    assert resolve("postgresql://app@/postgres?host=127.0.0.1&port=6001") == ["127.0.0.1:6001"]
    monkeypatch.setenv("PGPORT", "6002")
    assert resolve("postgresql://app@127.0.0.1/postgres") == ["127.0.0.1:6002"]


def test_a_service_file_host_is_checked(monkeypatch, tmp_path):
    services = tmp_path / "services.conf"
    services.write_text("[staging]\nhost=10.0.0.5\nport=5432\ndbname=app\n", encoding="utf-8")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    with pytest.raises(TargetError, match=r"service 'staging' host = '10\.0\.0\.5'"):
        resolve("postgresql://app@/postgres?service=staging")


def test_pghostaddr_is_checked_too(monkeypatch):
    monkeypatch.setenv("PGHOSTADDR", "10.0.0.5")
    with pytest.raises(TargetError, match=r"PGHOSTADDR/hostaddr = '10\.0\.0\.5'"):
        resolve("postgresql://app@127.0.0.1/postgres")


# -- names, aliases, sockets ----------------------------------------------------------------------
def test_names_are_resolved_and_every_address_checked():
    assert resolve("postgresql://app@db.local-alias:5433/x") == ["127.0.0.1:5433", "[::1]:5433"]
    with pytest.raises(TargetError, match=r"'db\.mixed' \(10\.9\.8\.7\): not loopback"):
        resolve("postgresql://app@db.mixed/x")
    with pytest.raises(UsageError, match=r"'nowhere\.invalid': cannot be resolved"):
        resolve("postgresql://app@nowhere.invalid/x")


def test_an_allowed_name_allows_its_addresses_and_they_are_dialled():
    assert resolve("postgresql://app@db.staging/x", ["db.staging"]) == ["10.20.0.5:5432"]
    assert resolve("postgresql://app@db.staging/x", ["10.20.0.5"]) == ["10.20.0.5:5432"]
    with pytest.raises(TargetError, match=r"--allow-target db\.staging"):
        resolve("postgresql://app@db.staging/x", ["other"])


@pytest.mark.parametrize(
    ("host", "dialled"),
    [
        ("127.1", "127.0.0.1:5432"),
        ("2130706433", "127.0.0.1:5432"),
        ("[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]:5432"),
        ("127.8.9.1", "127.8.9.1:5432"),
        ("[::1]", "[::1]:5432"),
        ("localhost", "127.0.0.1:5432"),
    ],
)
def test_loopback_aliases_are_loopback(host, dialled):
    def resolver(name, port, type=0, **kw):
        if name == "localhost":  # as /etc/hosts says, without reading it
            return fake_resolver("127.0.0.1", port, type)
        return fake_resolver(name, port, type)

    targets = safety.resolve_dsn(f"postgresql://app@{host}/x", [], resolver).targets
    assert [str(t) for t in targets] == [dialled]


def test_unix_sockets_are_local_and_keep_their_port():
    (target,) = safety.resolve_dsn("postgresql://app@/x?host=/run/pg&port=6543", []).targets
    assert (target.host, target.port) == ("/run/pg/.s.PGSQL.6543", 6543)
    # No host at all: asyncpg's defaults, Unix sockets then localhost; all local.
    defaults = safety.resolve_dsn("postgres://a@/x", []).targets
    assert all(t.is_unix or safety.is_loopback(t.host) for t in defaults)


def test_bad_dsns_are_usage_errors_without_the_password():
    with pytest.raises(UsageError, match="postgresql://") as info:
        safety.resolve_dsn(f"mysql://app:{PASSWORD}@h/db", [])
    assert PASSWORD not in str(info.value)
    with pytest.raises(UsageError, match="--dsn") as info:
        safety.resolve_dsn(f"postgresql://app:{PASSWORD}@127.0.0.1:5432,::1:1,x:2/db", [])
    assert PASSWORD not in str(info.value)


# -- what is checked is what asyncpg dials --------------------------------------------------------
def test_explicit_addresses_override_dsn_query_pghost_and_service(monkeypatch, tmp_path):
    """asyncpg's own parser, given the checked host/port, returns exactly them: nothing else."""
    services = tmp_path / "services.conf"
    services.write_text("[evil]\nhost=10.0.0.7\nport=1\n", encoding="utf-8")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGHOST", "10.0.0.6")
    monkeypatch.setenv("PGPORT", "2")
    resolved = safety.Resolved((safety.Target("127.0.0.1", 6000),), None)
    dsn = "postgresql://app@10.0.0.5:3/x?host=10.0.0.8&port=4&service=evil"
    addrs, _ = connect_utils._parse_connect_dsn_and_args(
        dsn=dsn,
        **resolved.connect_kwargs(),
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        service=None,
        servicefile=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
    )
    assert addrs == [("127.0.0.1", 6000)]


def test_the_password_found_for_the_name_travels_with_the_addresses(monkeypatch, tmp_path):
    """~/.pgpass matches the host as written; the children dial addresses, so it is passed on."""
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"localhost:5432:x:app:{PASSWORD}\n", encoding="utf-8")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))

    def resolver(name, port, type=0, **kw):
        return fake_resolver("127.0.0.1" if name == "localhost" else name, port, type)

    resolved = safety.resolve_dsn("postgresql://app@localhost:5432/x", [], resolver)
    assert resolved.password == PASSWORD
    from loadtests.settings import child_args, secret_env

    env = secret_env("postgresql://app@localhost:5432/x", resolved.password)
    assert env == {"STARTSIM_DSN": "postgresql://app@localhost:5432/x", "PGPASSWORD": PASSWORD}
    args = child_args(Path("s.toml"), 1, resolved.targets, [], 60.0, 5)
    assert args[args.index("--addresses") + 1] == "127.0.0.1:5432"
    assert PASSWORD not in " ".join(args)  # a command line shows in ps


def test_option_hosts_are_resolved_and_checked():
    assert safety.check_host_port("127.1:6432", "--upstream", [], fake_resolver).host == "127.0.0.1"
    with pytest.raises(TargetError, match=r"--master host = 'db\.staging' \(10\.20\.0\.5\)"):
        safety.check_host_port("db.staging:5557", "--master", [], fake_resolver)


# -- end to end, inside a network namespace with only loopback ------------------------------------
UNSHARE = shutil.which("unshare")
IP = shutil.which("ip")
if UNSHARE is None or IP is None:
    pytest.fail("the guard's end-to-end tests need unshare and ip (util-linux, iproute2)")

STARTSIM = Path(sys.executable).parent / "startsim"


def in_namespace(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """``startsim ARGS`` in a fresh network namespace: only ``lo``, brought up first."""
    import os
    import shlex

    script = f"{IP} link set lo up && exec {shlex.join([str(STARTSIM), *args])}"
    return subprocess.run(
        [UNSHARE, "-n", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("dsn", "env", "named"),
    [
        (f"postgresql://app:{PASSWORD}@/postgres?host=10.0.0.5", {}, "--dsn ?host = '10.0.0.5'"),
        (f"postgresql://app:{PASSWORD}@/postgres", {"PGHOST": "10.0.0.5"}, "PGHOST = '10.0.0.5'"),
        (f"postgresql://app:{PASSWORD}@127.0.0.1,10.0.0.5/postgres", {}, "'10.0.0.5'"),
    ],
)
def test_the_bypasses_are_refused_end_to_end(tmp_path, dsn, env, named):
    out = tmp_path / "results"
    res = in_namespace(["loadtest", "--dsn", dsn, "--out", str(out)], env)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "not loopback" in lines[0], res.stderr
    assert PASSWORD not in res.stdout + res.stderr
    assert not out.exists()  # nothing half-written


def test_the_worker_and_the_emulator_are_refused_end_to_end():
    dsn = f"postgresql://app:{PASSWORD}@/postgres?host=10.0.0.5"
    worker = in_namespace(["loadtest-worker", "--dsn", dsn, "--master", "127.0.0.1:5557"])
    assert worker.returncode == 2 and "--dsn ?host = '10.0.0.5'" in worker.stderr
    emulator = in_namespace(
        ["connector-emulator", "--listen", "127.1:0", "--upstream", "10.0.0.5:1"]
    )
    assert emulator.returncode == 2 and "--upstream host = '10.0.0.5'" in emulator.stderr


def test_a_plain_locust_run_is_refused_end_to_end():
    """``locust -f loadtests/locustfile.py`` checks its --dsn and --addresses as startsim does."""
    import os

    locustfile = Path(__file__).parent.parent / "loadtests" / "locustfile.py"
    base = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
    cases = [
        (["--dsn", f"postgresql://app:{PASSWORD}@/postgres?host=10.0.0.5"], "--dsn ?host"),
        (
            ["--dsn", "postgresql://app@127.0.0.1/x", "--addresses", "10.0.0.5:5432"],
            "--addresses host",
        ),
    ]
    for extra, named in cases:
        script = f"{IP} link set lo up && exec {shlex.join([*base, *extra])}"
        res = subprocess.run(
            [UNSHARE, "-n", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("STARTSIM_")},
            check=False,
        )
        assert res.returncode == 2, res.stderr
        refusal = f"{named} = '10.0.0.5': not loopback"
        assert refusal in res.stderr and "--allow-target 10.0.0.5" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and PASSWORD not in res.stdout + res.stderr
