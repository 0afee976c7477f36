"""trackgate.fastjson gives exactly what json gives, only faster: the same text, the same values, the
same errors."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackgate.fastjson import compact_encoder, loads

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(value=values)
def test_compact_encoders_write_what_json_dumps_writes(value: Any) -> None:
    for ensure_ascii in (True, False):
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii)
        assert compact_encoder(ensure_ascii=ensure_ascii)(value) == expected


def test_encoder_options_match_json() -> None:
    with pytest.raises(ValueError):
        compact_encoder(ensure_ascii=False, allow_nan=False)({"x": math.nan})
    odd = {"when": b"x"}
    assert compact_encoder(ensure_ascii=True, default=str)(odd) == json.dumps(odd, separators=(",", ":"), default=str)
    with pytest.raises(TypeError):
        compact_encoder(ensure_ascii=True)({"when": object()})


@given(value=values, before=st.sampled_from(["", " ", "\n\t "]), after=st.sampled_from(["", " ", "\r\n"]))
def test_loads_reads_what_json_loads_reads(value: Any, before: str, after: str) -> None:
    text = before + json.dumps(value) + after
    assert loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", " ", "{", '{"a":1} x', "[1,]", "nul", '"\\ud800', "{'a':1}"])
def test_loads_fails_as_json_loads_fails(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as ours:
        loads(text)
    assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos)
