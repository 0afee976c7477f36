"""The Event record: what every adapter receives, whatever produced it (pixel, click, app helper)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from .batches import Batches
from .fastjson import compact_encoder, loads

new_slotted: Callable[[type[Event], tuple[Any, ...], tuple[Any, ...]], Event] | None
try:
    from ._speedups import new_slotted
except ImportError:  # pragma: no cover - built wherever a C compiler is at hand
    new_slotted = None

EventKind = Literal[
    "pageview", "open", "click", "conversion", "identify", "alias", "set", "exposure", "custom"
]
EVENT_KINDS: frozenset[str] = frozenset(EventKind.__args__)  # type: ignore[attr-defined]


def new_event_id(now: float | None = None) -> str:
    """32 hex digits: 48 bits of milliseconds then 80 random bits, so ids sort by time and never collide.

    The random parts are drawn 64 at a time (see batches.py): one id is made per tracked request.
    """
    time_part = (int((time.time() if now is None else now) * 1000) & 0xFFFF_FFFF_FFFF).to_bytes(6, "big").hex()
    return time_part + _take_random_part()


def _draw_random_parts() -> list[str]:
    hexed = os.urandom(_RANDOM_BYTES * _BATCH).hex()
    step = 2 * _RANDOM_BYTES
    return [hexed[i : i + step] for i in range(0, len(hexed), step)]


_RANDOM_BYTES = 10
_BATCH = 64
_take_random_part = Batches(_draw_random_parts).take


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    name: str = ""
    visitor: str | None = None
    user_id: str | None = None
    url: str | None = None  # the page viewed, or the destination of a click
    referrer: str | None = None
    title: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # from the link (email recipient...)
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # set by the app
    revenue: float | None = None
    user_agent: str | None = None
    ip: str | None = None  # already anonymised as TRACKGATE_ANONYMIZE_IP asks
    language: str | None = None
    timestamp: float = dataclasses.field(default_factory=time.time)
    id: str = ""
    # The event's JSON text, once made (``snapshot``) or read back (the spool's), so that no later change to
    # a mapping it holds alters what is delivered, and writing it again (the store) needs no second encoding.
    # Not a field of the event: not compared, not shown, and dataclasses.replace drops it.
    _json: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        timestamp: object = self.timestamp
        if type(timestamp) is not float and not isinstance(timestamp, int | float):
            # (the id is made of it next: a text timestamp failed there, on 4,300-digit numbers)
            raise TypeError(f"timestamp must be a number of seconds, not {type(timestamp).__name__}")
        if not self.id:
            object.__setattr__(self, "id", new_event_id(self.timestamp))

    def to_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in _FIELD_ORDER}

    def to_json(self) -> str:
        """``json.dumps(event.to_dict(), separators=(",", ":"), default=str)``, at half the cost: the
        dispatcher encodes every event. ``default=str``: an app's odd property value (a datetime, a
        Decimal) must not cost the event."""
        if self._json is not None:
            return self._json
        data = {name: getattr(self, name) for name in _FIELD_ORDER}
        for name in ("metadata", "properties"):
            if not isinstance(data[name], dict):
                data[name] = dict(data[name])
        return _encode(data)

    def snapshot(self) -> None:
        """Fix what will be delivered: the event as it is now, whatever happens later to the dictionaries
        it holds (an app reusing one for its next event). Raises ``TypeError`` at once for what cannot be
        stored (a tuple as a dictionary key, a cycle), rather than the event failing later in the worker."""
        if self._json is None:
            problem = _wrong_field(self)
            if problem is not None:
                raise TypeError(f"trackgate: event {self.kind} {self.name!r} cannot be stored: {problem}")
            try:
                text = self.to_json()
            except (TypeError, ValueError, RecursionError) as exc:
                raise TypeError(f"trackgate: event {self.kind} {self.name!r} cannot be stored: {exc}") from None
            _set_field(self, "_json", text)

    @classmethod
    def from_json(cls, text: str) -> Event:
        """The event ``to_json`` wrote. Every field present and a known kind (what the spool and the store
        hold) is all the constructor would check, so such text skips it: the dispatcher reads back every
        event it spools, and the constructor was over half of that."""
        data = loads(text)
        if type(data) is dict and data.keys() == _FIELD_NAMES and data["kind"] in EVENT_KINDS and data["id"]:
            event = object.__new__(cls)
            for name in _FIELD_ORDER:
                _set_field(event, name, data[name])
            _set_field(event, "_json", text)
            return event
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The event ``to_dict`` gave (keys it does not know, from a newer version, are ignored)."""
        if _FIELD_NAMES.issuperset(data):
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in _FIELD_NAMES})

    @property
    def request_data(self) -> dict[str, str | None]:
        """pytracking's request_data shape, for webhooks that expect it."""
        return {"user_agent": self.user_agent, "user_ip": self.ip, "language": self.language,
                "referer": self.referrer}


def tracking_event(
    kind: EventKind,
    *,
    visitor: str | None,
    url: str | None,
    title: str | None,
    metadata: Mapping[str, Any],
    event_id: str,
    timestamp: float,
    referrer: str | None,
    user_agent: str | None,
    ip: str | None,
    language: str | None,
) -> Event:
    """The Event of a tracked open, click or page view. Its values come from a verified link and the
    request, each of its field's type already: the generated constructor (a call per field, then its
    checks) cost three microseconds of every tracked request; new_slotted sets the slots in one call."""
    values: tuple[Any, ...] = (
        kind, "", visitor, None, url, referrer, title, metadata, {}, None, user_agent, ip, language, timestamp,
        event_id, None,
    )  # in _EVENT_SLOTS' order
    if new_slotted is not None:
        return new_slotted(Event, _EVENT_SLOTS, values)
    event = _new_event(Event)
    for slot, value in zip(_EVENT_SLOTS, values, strict=True):
        slot.__set__(event, value)
    return event


_FIELD_ORDER = tuple(field.name for field in dataclasses.fields(Event) if field.init)
_FIELD_NAMES = frozenset(_FIELD_ORDER)
_set_field = object.__setattr__  # how a frozen dataclass's own __init__ sets its fields
_new_event = object.__new__
# The member descriptors of Event's __slots__: its fields, in order, then _json (tracking_event's values).
_EVENT_SLOTS = tuple(vars(Event)[name] for name in (*_FIELD_ORDER, "_json"))
# NaN and Infinity are not JSON (RFC 8259): strict receivers and PostgreSQL's json refuse them, so an event
# holding one cannot be stored, and snapshot() says so in the caller.
_encode = compact_encoder(ensure_ascii=True, allow_nan=False, default=str)


_TEXT_FIELDS = ("name", "id")
_OPTIONAL_TEXT_FIELDS = ("visitor", "user_id", "url", "referrer", "title", "user_agent", "ip", "language")


def _wrong_field(event: Event) -> str | None:
    """What is not of its field's type (an app's int as a name, None as a time): sinks and stores rely on it."""
    # Every event submitted pays for this: the fields are looked at directly first, named only on a fault.
    e = event
    if (
        isinstance(e.name, str)
        and isinstance(e.id, str)
        and e.id.isascii()  # (generated ids are; any other must at least be text a database row can hold)
        and (e.visitor is None or isinstance(e.visitor, str))
        and (e.user_id is None or isinstance(e.user_id, str))
        and (e.url is None or isinstance(e.url, str))
        and (e.referrer is None or isinstance(e.referrer, str))
        and (e.title is None or isinstance(e.title, str))
        and (e.user_agent is None or isinstance(e.user_agent, str))
        and (e.ip is None or isinstance(e.ip, str))
        and (e.language is None or isinstance(e.language, str))
        and isinstance(e.timestamp, int | float)
        and (e.revenue is None or isinstance(e.revenue, int | float))
        and type(e.metadata) is dict  # (any other Mapping is read below; the ABC check costs ten times more)
        and type(e.properties) is dict
    ):
        return None
    for name in _TEXT_FIELDS:
        if not isinstance(getattr(event, name), str):  # (a StrEnum, a str subclass of the app's: text)
            return f"{name} must be text, not {type(getattr(event, name)).__name__}"
    try:
        event.id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (json.loads of "\ud800" makes one)
        return "id must be text without lone surrogates"
    for name in _OPTIONAL_TEXT_FIELDS:
        value = getattr(event, name)
        if value is not None and not isinstance(value, str):
            return f"{name} must be text or None, not {type(value).__name__}"
    # (Typed as numbers, but an app may pass anything; a Decimal would come back from JSON as text.)
    timestamp: object = event.timestamp
    if not isinstance(timestamp, int | float):
        return f"timestamp must be a number, not {type(timestamp).__name__}"
    revenue: object = event.revenue
    if revenue is not None and not isinstance(revenue, int | float):
        return f"revenue must be a number or None, not {type(revenue).__name__}"
    for name in ("metadata", "properties"):
        if not isinstance(getattr(event, name), Mapping):
            return f"{name} must be a mapping, not {type(getattr(event, name)).__name__}"
    return None


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value
