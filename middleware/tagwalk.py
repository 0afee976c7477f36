"""Where a tag ends, found piece by piece: the HTML tokenizer's states inside a tag as a small machine.

The rewriter normally holds an unfinished tag until its ``>`` arrives and then reads it whole. A tag longer
than its bound (a huge inline ``data:`` URI, an unterminated quote) instead streams through unchanged while
this walker follows the tokenizer, so quoted ``>`` never ends the tag and the bytes after the tag are read
exactly as a whole-document pass reads them.
"""

from __future__ import annotations

import re

_WS = rb"\t\n\f\r "
_SPACE = frozenset(b"\t\n\f\r ")

# States of the standard's tokenizer that can be current between two bytes of a tag.
NAME, BEFORE_ATTR, ATTR_NAME, AFTER_ATTR_NAME, BEFORE_VALUE, DOUBLE, SINGLE, UNQUOTED, BOGUS = range(9)

# For each state, the next byte that can change it (everything before it keeps the state).
_NEXT = {
    NAME: re.compile(rb"[" + _WS + rb"/>]"),
    BEFORE_ATTR: re.compile(rb"[^" + _WS + rb"/]"),
    ATTR_NAME: re.compile(rb"[" + _WS + rb"/>=]"),
    AFTER_ATTR_NAME: re.compile(rb"[^" + _WS + rb"]"),
    BEFORE_VALUE: re.compile(rb"[^" + _WS + rb"]"),
    DOUBLE: re.compile(rb'"'),
    SINGLE: re.compile(rb"'"),
    UNQUOTED: re.compile(rb"[" + _WS + rb">]"),
    BOGUS: re.compile(rb">"),
}
_GT, _SLASH, _EQUALS, _DQ, _SQ = b">"[0], b"/"[0], b"="[0], b'"'[0], b"'"[0]


def walk(state: int, data: bytes, position: int) -> tuple[int, int]:
    """Follow ``data`` from ``position`` in ``state``: (new state, -1) when the tag goes on past the end, or
    (state, index just past its ">") when it ends."""
    size = len(data)
    while position < size:
        found = _NEXT[state].search(data, position)
        if found is None:
            return state, -1
        byte = data[found.start()]
        position = found.start() + 1
        if state in (DOUBLE, SINGLE):
            state = BEFORE_ATTR  # after a quoted value anything but ">" or "/" starts the next attribute
        elif byte == _GT:  # the only stop of BOGUS
            return state, position
        elif state in (NAME, UNQUOTED):
            state = BEFORE_ATTR  # whitespace or "/" (a "/" in an unquoted value is part of it: not in _NEXT)
        elif state == BEFORE_ATTR:
            state = ATTR_NAME  # any byte, "=" included, starts a name
        elif state == ATTR_NAME:
            state = BEFORE_VALUE if byte == _EQUALS else AFTER_ATTR_NAME if byte in _SPACE else BEFORE_ATTR
        elif state == AFTER_ATTR_NAME:
            state = BEFORE_VALUE if byte == _EQUALS else BEFORE_ATTR if byte == _SLASH else ATTR_NAME
        else:  # BEFORE_VALUE
            state = DOUBLE if byte == _DQ else SINGLE if byte == _SQ else UNQUOTED
    return state, -1
