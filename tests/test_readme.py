"""The README's commands and examples are the real ones: CI runs its test command, its scenario
example loads, and every shipped scenario it lists exists."""

import re
from pathlib import Path

from sim import scenario

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quick_start_is_two_commands_and_ci_runs_the_test_command():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(commands) == 2
    install_and_run, test = commands
    assert "startsim recommend" in install_and_run
    assert "pytest" in test
    assert test in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_scenario_example_in_readme_is_valid():
    (toml,) = [b for b in _blocks("toml") if "[fleet]" in b]
    sc = scenario.loads(toml, "README.md")
    assert sc.name == "example"
    assert sc.pool.min_size == 20 and sc.pool.max_size == 50
    assert sc.startup.db_init_timeout_s == 20.0


def test_every_shipped_scenario_is_listed_in_readme():
    for name in scenario.builtin_names():
        assert f"`{name}`" in README
