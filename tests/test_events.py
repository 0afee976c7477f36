"""Events as the spool and the store keep them: to_json and from_json give back the same event."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trackgate._speedups
import trackgate.events
from trackgate import Event
from trackgate.events import EVENT_KINDS, new_event_id, tracking_event
from trackgate.identity import new_code

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


def test_an_event_read_back_writes_the_text_it_was_read_from_until_it_is_changed() -> None:
    text = Event("click", visitor="v", metadata={"r": 1}, timestamp=1.5).to_json().replace(":1.5,", ":1.50,")
    back = Event.from_json(text)
    assert back.to_json() == text  # the store writes what the spool held, without encoding it again
    assert "_json" not in back.to_dict() and "_json" not in repr(back)
    changed = dataclasses.replace(back, name="renamed")
    assert json.loads(changed.to_json())["name"] == "renamed" and changed.to_json() != text


@pytest.mark.parametrize(
    ("make", "shape"),
    [(new_code, r"[a-z0-9]{16}"), (new_event_id, r"[0-9a-f]{32}")],
    ids=["visitor-codes", "event-ids"],
)
def test_random_values_drawn_in_batches_are_unique_and_a_forked_child_never_reuses_its_parents(
    make: Callable[[], str], shape: str
) -> None:
    parent = [make() for _ in range(200)]
    assert len(set(parent)) == 200 and all(re.fullmatch(shape, value) for value in parent)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first values go back to the parent
        os.close(reader)
        os.write(writer, " ".join(make() for _ in range(64)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    # What the parent still holds in its batch is what it hands out next: the child must have none of it.
    parent_next = [make() for _ in range(64)]
    assert len(child) == 64 and not set(child) & set(parent_next)


def test_event_ids_sort_by_their_time() -> None:
    ids = [new_event_id(moment) for moment in (1.0, 2.5, 60.0, 1_700_000_000.0)]
    assert ids == sorted(ids) and ids[0].startswith("0000000003e8")


@pytest.mark.parametrize("timestamp", ["1700000000", None, [1]])
def test_a_timestamp_that_is_no_number_is_a_type_error_naming_it(timestamp: object) -> None:
    with pytest.raises(TypeError, match="timestamp must be a number"):
        Event("custom", name="x", timestamp=timestamp)  # type: ignore[arg-type]


@contextlib.contextmanager
def _slots_filled(compiled: bool) -> Iterator[None]:
    """tracking_event with the compiled new_slotted, or with the Python code that stands in for it."""
    kept = trackgate.events.new_slotted
    if compiled:
        assert kept is not None, "the _speedups extension is not built"
    else:
        trackgate.events.new_slotted = None
    try:
        yield
    finally:
        trackgate.events.new_slotted = kept


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@given(
    kind=st.sampled_from(["open", "click", "pageview"]),
    texts=st.lists(st.none() | st.text(max_size=12), min_size=7, max_size=7),
    metadata=st.dictionaries(st.text(max_size=6), plain, max_size=3),
    timestamp=st.floats(0, 4e9),
)
def test_a_tracking_event_is_the_event_the_constructor_makes(
    compiled: bool, kind: Any, texts: list[str | None], metadata: dict[str, Any], timestamp: float
) -> None:
    visitor, url, title, referrer, user_agent, ip, language = texts
    values = {"visitor": visitor, "url": url, "title": title, "metadata": metadata, "timestamp": timestamp,
              "referrer": referrer, "user_agent": user_agent, "ip": ip, "language": language}
    expected = Event(kind, id="0123456789abcdef0123456789abcdef", **values)
    with _slots_filled(compiled):
        made = tracking_event(kind, event_id=expected.id, **values)
        again = tracking_event(kind, event_id=expected.id, **values)
    assert type(made) is Event and made == expected
    assert made.to_json() == expected.to_json()  # every field set, _json included (to_json reads it first)
    assert made.properties == {} and made.properties is not again.properties  # never one shared dict
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.url = "https://elsewhere.example/"  # type: ignore[misc]


def test_tracked_requests_make_their_events_in_c() -> None:
    assert trackgate.events.new_slotted is trackgate._speedups.new_slotted
