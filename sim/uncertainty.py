"""Uncertain inputs: a scenario value given as a range instead of a value.

A scenario file may write any numeric field, or any numeric parameter of a distribution, as

    instances = { range = [3, 40] }                         # uniform
    median = { range = [0.05, 0.8], scale = "log" }         # log-uniform (inside a distribution)
    max_connections = { choices = [25, 50, 100, 200, 400] } # one of a finite set

The value is then *uncertain*: :func:`lift` takes the range out of the data and puts the field's
nominal value in its place (the range's middle, geometric on a log scale, rounded for a whole-
number field; for choices the middle one), so every single-world command runs the nominal
scenario. ``startsim simulate`` runs a design of worlds across the ranges (sim/worlds.py).

The rule that joins this to ``[sources]``: the range is given in the field, once. The field's
label (sim/provenance.py) keeps its kind and note and shows the field's range; a label of an
uncertain value may not carry a range of its own. A label's ``range`` on a value written as a
value stays what it was: how far the value may plausibly be off, for the reader (capacity-storm
sits at a corner of its labels' ranges on purpose), never a design of worlds.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.errors import FieldProblem
from sim.provenance import range_middle

# Attributes of a range as written in a field; anything else in an inline table there is an error.
WRITTEN = ("range", "scale", "choices")


class _Written(BaseModel):
    """A range exactly as a file may write it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    scale: Literal["linear", "log"] = "linear"
    choices: Annotated[list[float], Field(min_length=1, max_length=100)] | None = None


class Spread(BaseModel):
    """An uncertain value: a uniform or log-uniform range, or equally likely choices (sorted).
    ``integer`` comes from the field (a whole-number field draws whole numbers), never a file."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    range: tuple[float, float] | None = None
    scale: Literal["linear", "log"] = "linear"
    choices: tuple[float, ...] | None = None
    integer: bool = False

    def _cast(self, x: float) -> int | float:
        return int(x) if self.integer else float(x)

    def nominal(self) -> int | float:
        """What single-world commands use: the middle of the range (rounded half up for whole
        numbers, as ``Source.middle``), or the middle choice (the lower of two middles)."""
        if self.choices is not None:
            return self._cast(self.choices[(len(self.choices) - 1) // 2])
        return self._cast(range_middle(*self.range, self.scale, self.integer))

    def ends(self) -> list[int | float]:
        """The values each of which must be a valid value of the field: both ends, or every
        choice."""
        return [self._cast(x) for x in (self.choices or self.range)]

    def at(self, u: float) -> int | float:
        """The value at ``u`` in [0, 1): choices by equal-probability bins; a range linearly or
        in log space; a whole-number range widened by half a unit at each end before rounding,
        so that each whole number of a linear range is equally likely."""
        if self.choices is not None:
            return self._cast(self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)])
        low, high = self.range
        if self.integer:
            low, high = low - 0.5, high + 0.5
        if self.scale == "log":
            x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            x = low + u * (high - low)
        if not self.integer:
            return float(min(max(x, self.range[0]), self.range[1]))
        return int(min(max(math.floor(x + 0.5), self.range[0]), self.range[1]))

    def written(self) -> dict[str, Any]:
        """The form a file writes (``scenario.toml`` of ``--out`` reads back as the same)."""
        if self.choices is not None:
            return {"choices": [self._cast(c) for c in self.choices]}
        out: dict[str, Any] = {"range": [self._cast(x) for x in self.range]}
        return out | ({"scale": "log"} if self.scale == "log" else {})

    def label_update(self) -> dict[str, Any]:
        """The attributes a ``[sources]`` label takes from the field (sim.provenance.Source)."""
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"range": list(self.range), "scale": self.scale}

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(f"{c:g}" for c in self.choices)
        low, high = self.range
        return f"{low:g}–{high:g}" + (" (log)" * (self.scale == "log"))

    def as_dict(self) -> dict[str, Any]:
        return {**self.written(), "scale": self.scale, "integer": self.integer}


def spread(dotted: str, written: Any, integer: bool) -> Spread:
    """A field's written range, checked: each problem names ``dotted`` and the bad value."""
    if not isinstance(written, dict):
        raise FieldProblem(dotted, written, "a range is an inline table { range = [low, high] }")
    try:
        w = _Written.model_validate(written)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"] if isinstance(p, str))
        problem = err["msg"]
        if err["type"] == "extra_forbidden":
            problem = "unknown attribute: a range takes range, scale and choices"
        return _raise(f"{dotted}.{where}", err.get("input"), problem)
    if (w.range is None) == (w.choices is None):
        what = "not both" if w.range else "range = [low, high] or choices = [a, b, …]"
        raise FieldProblem(dotted, written, f"give a range or choices: {what}")
    if w.choices is not None and "scale" in w.model_fields_set:
        raise FieldProblem(f"{dotted}.scale", w.scale, "applies to a range, not to choices")
    if w.range is not None:
        low, high = w.range
        shown = written["range"]  # as written: [40, 3], not [40.0, 3.0]
        if low > high:
            raise FieldProblem(
                f"{dotted}.range", shown, f"low ({low:g}) must not exceed high ({high:g})"
            )
        if w.scale == "log" and low <= 0:
            raise FieldProblem(f"{dotted}.range", shown, 'a "log" range must be above 0')
    ends = w.choices if w.choices is not None else w.range
    attr = "choices" if w.choices is not None else "range"
    if len(set(ends)) < len(ends) and w.choices is not None:
        raise FieldProblem(f"{dotted}.choices", written["choices"], "lists a value twice")
    for x in ends:
        if integer and not float(x).is_integer():
            raise FieldProblem(
                f"{dotted}.{attr}", x, f"{dotted} is a whole number: each end must be one"
            )
    return Spread(
        range=tuple(w.range) if w.range else None,
        scale=w.scale,
        choices=tuple(sorted(w.choices)) if w.choices else None,
        integer=integer,
    )


def _raise(field: str, value: object, problem: str):
    raise FieldProblem(field, value, problem)


def lift(data: dict[str, Any], defaults: dict[str, Any]) -> tuple[dict, dict[str, Spread]]:
    """The data with each written range replaced by its nominal value, and the ranges by dotted
    field. ``defaults`` is ``Scenario().to_dict()``: it says which fields are numbers. ``data`` is
    not changed. A range where none can be (text, a list, a distribution itself) is refused."""
    out, found = dict(data), {}
    for key, value in data.items():
        if key in ("sources", "uncertain"):
            continue
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            section = dict(value)
            for name, field_value in value.items():
                dotted = f"{key}.{name}"
                optional = (key == "team" and name in _TEAM_OPTIONAL) or dotted in _OPTIONAL_NUMBERS
                if name not in defaults[key] and not optional:
                    continue  # an unknown field: the model refuses it by name
                default = defaults[key].get(name, _OPTIONAL_NUMBERS.get(dotted))
                section[name] = _lift_field(dotted, field_value, default, key, found)
            out[key] = section
        elif key in defaults and isinstance(value, dict):
            out[key] = _lift_field(key, value, defaults[key], None, found)
    return out, found


# Model fields whose default is None (no value: Scenario().to_dict() leaves them out) but which
# are numbers when set, so they may be written as a range: a zero of their type.
_OPTIONAL_NUMBERS = {"path.until_s": 0.0}

# [team] fields whose default is None (Scenario().to_dict() leaves them out).
_TEAM_OPTIONAL = (
    "success_criterion",
    "observed_failures",
    "window_deploys",
    "window_hours",
    "deploys_per_hour",
)


def _lift_field(dotted: str, value: Any, default: Any, section: str | None, found: dict) -> Any:
    if isinstance(default, dict) and isinstance(value, dict):  # a distribution
        if "dist" not in value and set(value) & set(WRITTEN):
            raise FieldProblem(
                dotted,
                value,
                "a distribution cannot take a range itself: give one to a parameter, "
                'e.g. median = { range = [0.05, 0.8], scale = "log" }',
            )
        params = dict(value)
        for name, param in value.items():
            if isinstance(param, dict):
                params[name] = _lift_param(f"{dotted}.{name}", name, param, found)
        return params
    if not isinstance(value, dict):
        return value
    if section == "team":
        raise FieldProblem(
            dotted, value, "[team] is what reports judge against; the model never reads it, so a "
            "range there changes no world (a [sources] label may say how far it may be off)"
        )  # fmt: skip
    if isinstance(default, bool) or not isinstance(default, int | float):
        kinds = {str: "text", bool: "true or false", list: "a list"}
        what = kinds.get(type(default), "not a number")
        raise FieldProblem(dotted, value, f"cannot take a range: it is {what}")
    s = spread(dotted, value, integer=isinstance(default, int))
    found[dotted] = s
    return s.nominal()


def _lift_param(dotted: str, name: str, written: dict, found: dict) -> Any:
    if name == "dist":
        raise FieldProblem(dotted, written, "names the distribution: only numbers take a range")
    if name == "values":
        raise FieldProblem(
            dotted, written, "an empirical distribution's values are measurements: no range"
        )
    s = spread(dotted, written, integer=False)
    found[dotted] = s
    return s.nominal()
