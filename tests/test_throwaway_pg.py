"""The tests' own PostgreSQL starts on a fresh machine: as root with a minimal ``PATH`` (no
``/usr/sbin``: ``useradd`` is not found there) and as a normal user, and leaves no system user and
no folder behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

CHILD = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from throwaway_pg import start_server
    server = start_server(max_connections=10)
    try:
        owner = (server.pgdata / "postmaster.pid").stat().st_uid
        answer = server.psql("select 41 + 1")
        print(json.dumps({"owner": owner, "answer": answer, "base": str(server.pgdata.parent)}))
    finally:
        server.stop()
    """
)


@pytest.mark.parametrize("who", ["this user", "a normal user"])
def test_starts_with_a_minimal_path_and_leaves_nothing_behind(who):
    import json
    import pwd

    as_user, python = {}, sys.executable
    env = {"HOME": os.environ.get("HOME", "/"), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    if who == "a normal user":
        if os.geteuid() != 0:
            pytest.skip("only root can run the child as another user")
        nobody = pwd.getpwnam("nobody")
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": [], "cwd": "/"}
        python, path = _python_for(as_user)
        env.update(HOME="/", PYTHONPATH=path)
    users_before = Path("/etc/passwd").read_text()
    tests = str(Path(__file__).parent)
    res = subprocess.run(
        [python, "-c", CHILD, tests],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        **as_user,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["answer"] == "42"
    assert out["owner"] != 0  # PostgreSQL never runs as root
    if who == "a normal user" or os.geteuid() != 0:
        assert out["owner"] == as_user.get("user", os.geteuid())  # a normal user: as itself
    assert not Path(out["base"]).exists()
    assert Path("/etc/passwd").read_text() == users_before  # no system user made, or left


def _python_for(as_user: dict) -> tuple[str, str]:
    """An interpreter of this version that the other user may run, and our packages' folder: this
    venv's, or the system's when this one lives under root's 0700 home (pyenv)."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    for python in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            res = subprocess.run(
                [python, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                env={"PYTHONPATH": site},
                **as_user,
            )
        except OSError:
            continue
        if res.returncode == 0 and res.stdout.strip() == str(sys.version_info[:2]):
            return python, site
    pytest.skip("no interpreter of this version that nobody may run")
