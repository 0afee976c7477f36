"""JSON on hot paths (a link's payload, a spooled event): json's C encoder and scanner, each made once.

``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder on every call, and ``JSONDecoder.decode``
adds two whitespace regex matches around the C scanner; for the small objects trackgate encodes per link
and per event that overhead is half the cost. Results are exactly json's.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from collections.abc import Callable
from typing import Any


def compact_encoder(
    *, ensure_ascii: bool, allow_nan: bool = True, default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """A function giving ``json.dumps(value, separators=(",", ":"), ...)`` for these options.

    No circular-reference check (a shared marker set is not thread-safe): a cycle ends in RecursionError.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=allow_nan, default=default)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        return encoder.encode
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    chunks = make(None, encoder.default, strings, None, ":", ",", False, False, allow_nan)
    return lambda value: "".join(chunks(value, 0))


# A str as JSON text, non-ASCII kept: what compact_encoder(ensure_ascii=False) writes for one.
encode_string: Callable[[str], str] = json.encoder.encode_basestring

_decoder = json.JSONDecoder()
# (typeshed types its argument as a scanner, but it takes the decoder whose settings it copies.)
# The value at a position of a str and where it ends (StopIteration when there is none): json's C scanner,
# also for compiled code that reads what loads() reads.
scan_json: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]


def loads(text: str) -> Any:
    """``json.loads`` of a str; faster when the text is a bare JSON value, as compact JSON is."""
    try:
        value, end = scan_json(text, 0)
    except StopIteration:
        return _decoder.decode(text)  # leading whitespace, or not JSON: json's own reading and error
    if end != len(text):
        return _decoder.decode(text)
    return value
