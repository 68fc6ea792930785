"""Every error startsim raises on purpose, in one place.

    StartsimError                 base: the CLI turns any of these into a message and exit code 2
    ├── ScenarioError             a scenario file or override is wrong (names file, field, value)
    ├── UsageError                settings that cannot be satisfied (a bad grid, target, …)
    ├── InputError                a measurement file is wrong (names file, line, field, value)
    └── TargetError               a load test would reach a host the user did not name

Only the CLI turns these into exit codes; library code raises them and nothing else exits.
"""


class StartsimError(Exception):
    """Base class: a mistake in what the user asked for, reported without a traceback."""


class ScenarioError(StartsimError):
    """A scenario is invalid. The message names the source, the field and the value."""

    def __init__(self, source: str, field: str, value: object, problem: str) -> None:
        self.source, self.field, self.value, self.problem = source, field, value, problem
        shown = "(missing)" if value is _MISSING else _short(repr(value))
        where = f"{field} = {shown}: " if field else ""
        super().__init__(f"{source}: {where}{problem}")


def _short(text: str, limit: int = 120) -> str:
    # A value may be a list of 100,000 measurements: the message stays one readable line.
    return text if len(text) <= limit else f"{text[: limit - 20]} … ({len(text):,} characters)"


class UsageError(StartsimError):
    """Settings that cannot work together, or a target that cannot be met.

    ``option`` is the library's name for the setting (``target_success``, ``vary``), never a
    command-line flag: the CLI turns it into its flag (``--target-success``), a notebook user reads
    the parameter they passed."""

    def __init__(self, problem: str, option: str | None = None, value: object = None) -> None:
        self.problem, self.option, self.value = problem, option, value
        if option is None:
            message = problem
        elif value is None:
            message = f"{option}: {problem}"
        else:
            message = f"{option} = {_short(repr(value))}: {problem}"
        super().__init__(message)


class InputError(StartsimError):
    """A campaign folder or log file cannot be read as measurements: names the file and line."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")


class TargetError(StartsimError):
    """A load-test target outside loopback that the user did not allow explicitly."""


class FieldProblem(Exception):
    """Inside scenario validation only (never raised to a caller): a rule broken at a field.
    Not a ValueError, so pydantic lets it through with its field; ``sim.scenario.from_dict``
    turns it into a :class:`ScenarioError`."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(problem)
        self.field, self.value, self.problem = field, value, problem


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()
MISSING = _MISSING
