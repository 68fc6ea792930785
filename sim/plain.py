"""Typed records to plain JSON data and back, by their fields' declared types.

``plain(obj)`` turns a record into summary.json's data: a dataclass becomes a dict of its fields
in declaration order (or its own ``as_dict()`` when it has one), tuples become lists. ``build(cls,
data)`` is the inverse: it reads each field's key from ``data`` and builds the field's declared
type, so ``plain(build(cls, d)) == d`` holds for a record whose fields mirror ``d``. A field whose
key is not a Python name (``from``, ``p2.5``) says so with ``field(metadata={KEY: "from"})``.
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any

KEY = "key"  # metadata naming a field's JSON key when it differs from the field's name


def key(f) -> str:
    return f.metadata.get(KEY, f.name)


def plain(obj: Any) -> Any:
    """Plain JSON data of a typed record (recursively)."""
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        return record_dict(obj)
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def record_dict(obj: Any) -> dict:
    """A dataclass's fields as plain data by their keys, past any ``as_dict`` of its own."""
    return {key(f): plain(getattr(obj, f.name)) for f in fields(obj)}


def build(cls: type, data: dict) -> Any:
    """A dataclass ``cls`` from its plain data: each field from its key, by its declared type."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: typed(hints[f.name], data[key(f)]) for f in fields(cls) if f.init})


def typed(tp: Any, value: Any) -> Any:
    """``value`` (plain JSON data) as the type ``tp``: dataclasses, optionals, tuples, lists and
    dicts of them; anything else as it is."""
    if value is None or tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return typed(inner, value)
    if origin is tuple:
        return tuple(typed(args[0], v) for v in value)
    if origin is list:
        return [typed(args[0], v) for v in value]
    if origin is dict:
        return {k: typed(args[1], v) for k, v in value.items()}
    if is_dataclass(tp):
        return tp.from_dict(value) if hasattr(tp, "from_dict") else build(tp, value)
    return value
