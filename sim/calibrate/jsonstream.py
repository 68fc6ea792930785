"""One large JSON document read piece by piece: the big arrays inside it one element at a time.

``kubectl get events -o json`` writes one ``List`` whose ``items`` hold every object, and an OTLP
exporter one ``{"resourceSpans": [{"resource": …, "scopeSpans": [{"spans": […]}]}]}`` object: read
whole, a gigabyte of either takes several gigabytes of memory. :func:`walk` reads the text in
:data:`PIECE_CHARS` pieces and descends only along the given paths (``("items", "*")``: the
top-level object's ``items``, each element); every other value — an element, a ``metadata``, a
``resource`` — is decoded whole by the standard library's C decoder, so memory holds one element
at a time and the rate stays the decoder's. Several documents one after another (``kubectl get
pods -o json --watch``) are read in turn.

It yields events, in the file's order:

- ``("item", where, value)``: an element of an array at the end of a path;
- ``("member", where, key, value)``: a member of an object on a path, decoded whole;
- ``("end", where, members)``: an object on a path closed (``members``: the members decoded whole,
  :data:`STREAMED` for those descended into) — ``None`` for an array;
- ``("value", where, value)``: a top-level value off every path, decoded whole.

``where`` is the JSON path (``$.items[3]``; ``$[2]`` for the third of several documents). A file
cut short or not JSON is an :class:`~sim.errors.InputError` naming the path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from sim.errors import InputError

PIECE_CHARS = 1 << 20
TRUNCATED = "cut short (a truncated file?)"
STREAMED = object()  # a member descended into: its elements came as events of their own
_SPACE = re.compile(r"\s*")
# The decoder says where a value it could not read began: a literal, a number or an escape cut
# by the piece's end (``nul``, ``-1.5e``, ``\u00``) begins at most this far before it.
CUT_MARGIN = 16


class _Text:
    """The file's text from a position on, refilled a piece at a time."""

    def __init__(self, f, path: str, progress=None) -> None:
        self.f, self.path, self.progress = f, path, progress
        self.buf, self.pos, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()

    def more(self) -> bool:
        piece = self.f.read(PIECE_CHARS)
        self.buf, self.pos, self.eof = self.buf[self.pos :] + piece, 0, not piece
        if self.progress is not None and piece:
            self.progress(self.f.buffer.tell())
        return bool(piece)

    def peek(self) -> str:
        """The next character that is not white space, "" at the end of the file."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos : self.pos + 1]

    def fail(self, where: str, why: str) -> InputError:
        return InputError(self.path, None, f"{where}: {why}")

    def value(self, where: str) -> object:
        """One whole JSON value from here, decoded by the C decoder."""
        if not self.peek():
            raise self.fail(where, TRUNCATED)
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # An error at the piece's end (or a string begun in it) may be the piece's, not
                # the file's: read on. Any other is the file's: say so at once.
                at_end = exc.pos >= len(self.buf) - CUT_MARGIN or exc.msg.startswith("Unterminated")
                if at_end and not self.eof and self.more():
                    continue
                cut = at_end and self.eof
                raise self.fail(where, TRUNCATED if cut else f"not JSON ({exc.msg})") from None
            # A number at the piece's end may go on in the next piece: decode it again then.
            if end == len(self.buf) and not self.eof and self.more():
                continue
            self.pos = end
            return obj

    def expect(self, chars: str, where: str) -> str:
        c = self.peek()
        if c not in chars or not c:
            shown = " or ".join(repr(x) for x in chars)
            raise self.fail(where, TRUNCATED if not c else f"expected {shown}, not {c!r}")
        self.pos += 1
        return c


def walk(f, path: str, paths: tuple[tuple, ...], progress=None) -> Iterator[tuple]:
    """The events of every JSON document in the text file ``f`` (module docstring).
    ``progress(bytes_read)`` is told after each piece read."""
    text = _Text(f, path, progress)
    several = _several(text)
    n = 0
    while text.peek():
        yield from _walk(text, (), "$" if n == 0 and not several else f"$[{n}]", paths)
        n += 1


def _several(text: _Text) -> bool:
    """Whether the file holds several documents: the first ends within the first
    :data:`LOOKAHEAD_CHARS` and something follows it (a bigger one is taken as the only one)."""
    while text.peek():
        try:
            _, end = text.decoder.raw_decode(text.buf, text.pos)
        except json.JSONDecodeError:
            if len(text.buf) - text.pos >= LOOKAHEAD_CHARS or not text.more():
                return False
            continue
        if _SPACE.match(text.buf, end).end() < len(text.buf):
            return True
        if not text.more():
            return False
    return False


LOOKAHEAD_CHARS = 1 << 16


def _under(at: tuple, paths: tuple[tuple, ...]) -> list[tuple]:
    return [p for p in paths if len(p) > len(at) and p[: len(at)] == at]


def _fits(c: str, at: tuple, paths: tuple[tuple, ...]) -> bool:
    """Whether the value beginning with ``c`` at ``at`` is one to descend into."""
    below = _under(at, paths)
    if c == "{":
        return any(p[len(at)] != "*" for p in below)
    return c == "[" and any(p[len(at)] == "*" for p in below)


def _walk(text: _Text, at: tuple, where: str, paths: tuple[tuple, ...]) -> Iterator[tuple]:
    c = text.peek()
    if c == "{" and _fits(c, at, paths):
        yield from _object(text, at, where, paths)
    elif c == "[" and _fits(c, at, paths):
        yield from _array(text, at, where, paths)
    elif not at:
        yield ("value", where, text.value(where))
    else:
        yield ("item", where, text.value(where))


def _object(text: _Text, at: tuple, where: str, paths) -> Iterator[tuple]:
    text.pos += 1
    members: dict = {}
    if text.peek() == "}":
        text.pos += 1
        yield ("end", where, members)
        return
    while True:
        if text.peek() != '"':
            text.expect('"', where)
        key = text.value(where)
        text.expect(":", f"{where}.{key}")
        child, here = (*at, key), f"{where}.{key}"
        if _fits(text.peek(), child, paths):
            members[key] = STREAMED
            yield from _walk(text, child, here, paths)
        else:
            members[key] = text.value(here)
            yield ("member", where, key, members[key])
        if text.expect(",}", where) == "}":
            break
    yield ("end", where, members)


def _array(text: _Text, at: tuple, where: str, paths) -> Iterator[tuple]:
    text.pos += 1
    child = (*at, "*")
    deeper = bool(_under(child, paths))
    i = 0
    if text.peek() == "]":
        text.pos += 1
        yield ("end", where, None)
        return
    while True:
        here = f"{where}[{i}]"
        if deeper:
            yield from _walk(text, child, here, paths)
        else:
            yield ("item", here, text.value(here))
        i += 1
        if text.expect(",]", here) == "]":
            break
    yield ("end", where, None)
