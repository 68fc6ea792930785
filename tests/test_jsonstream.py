"""sim/calibrate/jsonstream.py: one JSON document read piece by piece gives what the standard
decoder gives whole, whatever the pieces' size — a literal, number, escape or string cut at a
piece's end included — and names the element a cut or bad file breaks."""

from __future__ import annotations

import io
import json

import pytest

from sim.calibrate import jsonstream
from sim.errors import InputError

ITEMS = [
    {"a": None, "b": True, "c": False, "n": -1.5e-3, "big": 12345678901234567890},
    {"s": 'caf\u00e9 \\ "quoted" \n', "nested": {"x": [1, 2, {"y": None}]}, "e": []},
    [None, True, False, 0, -0.25, "\u2603"],
    "a string item",
    17,
]
DOC = {"apiVersion": "v1", "items": ITEMS, "kind": "List", "metadata": {"resourceVersion": ""}}


def walk(text: str, piece: int, paths=(("items", "*"),)):
    jsonstream.PIECE_CHARS = piece
    return list(jsonstream.walk(_Text(text), "f.json", paths))


class _Text(io.StringIO):
    buffer = io.BytesIO()  # progress is not asked for here


@pytest.fixture(autouse=True)
def _restore(monkeypatch):
    monkeypatch.setattr(jsonstream, "PIECE_CHARS", jsonstream.PIECE_CHARS)


@pytest.mark.parametrize("indent", [None, 2])
def test_every_piece_size_reads_the_same_items_and_members(indent):
    text = json.dumps(DOC, indent=indent)
    for piece in range(1, 60):
        events = walk(text, piece)
        items = [e[2] for e in events if e[0] == "item"]
        assert items == ITEMS, piece
        assert [e[1] for e in events if e[0] == "item"] == [f"$.items[{i}]" for i in range(5)]
        (end,) = [e for e in events if e[0] == "end" and e[1] == "$"]
        assert end[2]["kind"] == "List" and end[2]["items"] is jsonstream.STREAMED


def test_several_documents_are_numbered_and_a_lone_one_is_dollar():
    # objects off the paths' keys come whole, at their "end"; other values as "value"
    docs = [ITEMS[0], ITEMS[1], ITEMS[2]]
    text = "\n".join(json.dumps(o, indent=2) for o in docs)
    events = walk(text, 7)
    tops = [(e[0], e[1], e[2]) for e in events if "." not in e[1] and e[0] in ("end", "value")]
    assert tops == [("end", "$[0]", docs[0]), ("end", "$[1]", docs[1]), ("value", "$[2]", docs[2])]
    assert walk(json.dumps(ITEMS[2]), 7) == [("value", "$", ITEMS[2])]


def test_a_cut_or_broken_document_names_the_element():
    text = json.dumps(DOC)
    cut = text[: text.index('"a string item"') + 4]
    with pytest.raises(InputError, match=r"\$\.items\[3\]: cut short"):
        walk(cut, 8)
    bad = text.replace('"a string item"', "[1, 2,, 3]")
    with pytest.raises(InputError, match=r"\$\.items\[3\]: not JSON \(Expecting value\)"):
        walk(bad, 4096)
    with pytest.raises(InputError, match=r"\$\.items\[0\]: expected ',' or '\]', not 'x'"):
        walk('{"items": [1 x]}', 3)
