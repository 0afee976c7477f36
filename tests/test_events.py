"""Events as the spool and the store keep them: to_json and from_json give back the same event."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackgate import Event
from trackgate.events import EVENT_KINDS

plain = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=12)
events = st.builds(
    Event,
    kind=st.sampled_from(sorted(EVENT_KINDS)),
    name=st.text(max_size=12),
    visitor=st.none() | st.text(max_size=16),
    user_id=st.none() | st.text(max_size=8),
    url=st.none() | st.text(max_size=30),
    metadata=st.dictionaries(st.text(max_size=6), plain, max_size=3),
    properties=st.dictionaries(st.text(max_size=6), plain | st.lists(plain, max_size=2), max_size=3),
    revenue=st.none() | st.floats(0, 1e6),
    user_agent=st.none() | st.text(max_size=20),
    ip=st.none() | st.sampled_from(["127.0.0.1", "2001:db8::"]),
    timestamp=st.floats(0, 4e9),
)


@given(event=events)
def test_an_event_comes_back_from_its_json_unchanged(event: Event) -> None:
    back = Event.from_json(event.to_json())
    assert back == event and type(back) is Event
    assert json.loads(event.to_json()) == json.loads(json.dumps(event.to_dict(), separators=(",", ":"), default=str))


def test_json_from_another_version_goes_through_the_constructor() -> None:
    event = Event("click", visitor="v", url="https://x.example/")
    newer: dict[str, Any] = {**json.loads(event.to_json()), "added_later": 1}
    assert Event.from_json(json.dumps(newer)) == event
    older = json.loads(event.to_json())
    del older["title"]
    assert Event.from_json(json.dumps(older)) == event
    with pytest.raises(ValueError, match="unknown event kind"):
        Event.from_json(json.dumps({**json.loads(event.to_json()), "kind": "bogus"}))
    without_id = {**json.loads(event.to_json()), "id": ""}
    assert len(Event.from_json(json.dumps(without_id)).id) == 32  # the constructor gives it one

