"""The calibrated scenario as TOML, with one comment per calibrated field: its source, sample size
and fit quality; the campaigns it came from in a header (and in ``description``, which the ADR
shows). The text is read back through :func:`sim.scenario.loads` before anyone writes it."""

from __future__ import annotations

import json
import math
from typing import Any

from sim.calibrate import Calibration
from sim.scenario import loads


def render(cal: Calibration, command: str = "") -> str:
    data = cal.scenario.to_dict()
    comments = {e.field: _comment(e) for e in cal.estimates}
    lines = [
        f"# Calibrated by `{command or 'startsim calibrate'}`",
        f"# from: {', '.join(cal.runs)}",
        "# Fields without a comment come from the base scenario, not from measurements.",
    ]
    lines += [f"# note: {n}" for n in cal.notes]
    lines += [f"# as monitoring counts: {text}" for m in cal.monitoring for text in m.lines()]
    if cal.db_init is not None:
        lines.append(f"# database init as measured (not a field): {cal.db_init.quality()}")
    lines.append("")
    for key, value in data.items():
        if not isinstance(value, dict) and value is not None:
            lines.append(_line(key, value, comments.get(key)))
    for section, fields in data.items():
        if not isinstance(fields, dict):
            continue
        lines += ["", f"[{section}]"]
        for key, value in fields.items():
            if value is not None:
                lines.append(_line(key, value, comments.get(f"{section}.{key}")))
    text = "\n".join(lines) + "\n"
    loads(text, "calibrated scenario")  # it must read back as the scenario it describes
    return text


def _comment(e) -> str:
    interval = e.interval()
    head = f"{e.source}; n = {e.n}" + (f"; interval {interval}" if interval != "—" else "")
    return f"{head}; {e.quality}"


def _line(key: str, value: Any, comment: str | None) -> str:
    shown = json.dumps(key) if "." in key else key  # [sources] keys are dotted field names
    text = f"{shown} = {_value(value)}"
    return f"{text}  # {' '.join(comment.split())}" if comment else text


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "nan"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = ", ".join(f"{k} = {_value(x)}" for k, x in v.items() if x is not None)
        return "{ " + items + " }"
    raise TypeError(f"cannot write {v!r} as TOML")
