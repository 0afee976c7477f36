"""KISSmetrics: a sink that speaks the tracking API, and a drop-in for py-KISSmetrics.

The sink (``TRACKGATE_SINKS=kissmetrics``, ``TRACKGATE_KISSMETRICS_KEY``, ``TRACKGATE_KISSMETRICS_URL``)
sends one GET per event, exactly as py-KISSmetrics 1.1 builds it: ``{url}/e`` (record), ``/s`` (set) or
``/a`` (alias) with ``_k`` (key), ``_p`` (person), ``_n`` (event name, or the alias), ``_d=1&_t=<seconds>``
(events arrive late, so they are always back-dated) and the properties as further parameters, encoded
with ``quote_plus``. The person is the event's user id when the app identified one, else the visitor code.

========== =========================================================================================
kind       request
========== =========================================================================================
pageview   /e "Page View" with "Viewed URL" and "Referrer" (the names KISSmetrics' own JavaScript uses)
open       /e "Opened Email" with the link's metadata
click      /e "Clicked Link" with "URL" and the link's metadata
conversion /e the goal name ("Converted" when empty) with the revenue as "Billing Amount"
exposure   /e "Viewed Experiment" with "Experiment" (the event name)
custom     /e the event name (none: no _n, as py-KISSmetrics sends a record without one)
set        /s the properties
identify,  /a person = the visitor code, alias = the user id
alias
========== =========================================================================================

Event names are configurable: ``KissmetricsSink(key, event_names={"pageview": "Viewed Page"})``.

The facade replaces py-KISSmetrics without code changes::

    from trackgate.adapters.kissmetrics import Client, KM
    km = Client(key="...")                     # blocking, like py-KISSmetrics: .status and .data
    km.record("bob@example.org", "Signed Up", {"Plan": "Pro"})
    km = Client(key="...", background=True)   # the request thread never waits: the dispatcher sends it

With ``background=True`` calls become ``trackgate.Event`` objects handed to ``trackgate.dispatch.submit``;
they reach every configured sink (``TRACKGATE_SINKS``), the KISSmetrics one with
``TRACKGATE_KISSMETRICS_KEY``, and the call returns a response with status 202 at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import aiohttp

from trackgate import ConfigError, Event, Settings
from trackgate.dispatch.sink import Outcome, Rejected

from ._http import DEFAULT_TIMEOUT, exchange

__all__ = [
    "DEFAULT_EVENT_NAMES",
    "KM",
    "Client",
    "ClientCompat",
    "KissmetricsReply",
    "KissmetricsResponse",
    "KissmetricsSink",
    "create_sink",
    "request_for",
]

# py-KISSmetrics's module constants, for code that reads them.
TRACKING_HOSTNAME = "trk.kissmetrics.io"
TRACKING_SCHEME = "http"
RECORD_PATH = "e"
SET_PATH = "s"
ALIAS_PATH = "a"

DEFAULT_EVENT_NAMES: Mapping[str, str] = {
    "pageview": "Page View",
    "open": "Opened Email",
    "click": "Clicked Link",
    "conversion": "Converted",  # used when the conversion has no goal name
    "exposure": "Viewed Experiment",
}

# Parameters the tracking API reserves; a property of that name would overwrite the key or the person.
_RESERVED = frozenset({"_k", "_p", "_n", "_t", "_d"})

Path = Literal["e", "s", "a"]


# --- wire format (shared by the sink and the facade) ------------------------------------------------------
def create_query(
    key: str | None,
    person: Any,
    *,
    event: Any = None,
    timestamp: Any = None,
    identity: Any = None,
    properties: Mapping[str, Any] | None = None,
) -> str:
    """The query string py-KISSmetrics 1.1 builds for the same arguments, parameter for parameter."""
    query: dict[str, Any] = {"_k": key, "_p": person}
    if timestamp:
        query["_d"] = 1
        query["_t"] = int(timestamp)
    if event:
        query["_n"] = event
    if identity:
        query["_n"] = identity
    query.update(properties or {})
    return _urlencode(query)


# What quote_plus leaves as it is: keys, visitor codes and numbers mostly are.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*")
_PLAIN_TYPES = (str, int, float)


def _urlencode(query: Mapping[str, Any]) -> str:
    """``urllib.parse.urlencode(query)``, calling quote_plus only where it would change something: the
    sink builds one query per event, and quoting every key and value was a fifth of its CPU."""
    parts: list[str] = []
    for key, value in query.items():
        if type(key) is not str or type(value) not in _PLAIN_TYPES:
            return urllib.parse.urlencode(query)  # bytes, sequences, objects: urlencode's own rules
        text = value if type(value) is str else str(value)
        parts.append(
            (key if _UNQUOTED.fullmatch(key) else urllib.parse.quote_plus(key))
            + "="
            + (text if _UNQUOTED.fullmatch(text) else urllib.parse.quote_plus(text))
        )
    return "&".join(parts)


def request_for(event: Event, key: str, names: Mapping[str, str] = DEFAULT_EVENT_NAMES) -> tuple[Path, str] | str:
    """(path, query) for ``event``, or the reason it cannot be expressed in the tracking API."""
    person = event.user_id or event.visitor
    if event.kind in ("identify", "alias"):
        if not (event.visitor and event.user_id):
            return f"{event.kind} needs both a visitor code and a user id"
        return "a", create_query(key, event.visitor, identity=event.user_id)
    if not person:
        return "no person: the event has neither a user id nor a visitor code"
    if event.kind == "set":
        if not event.properties:
            return "set without properties"
        return "s", create_query(key, person, timestamp=event.timestamp, properties=_flat(event.properties))
    name, properties = _record(event, names)
    return "e", create_query(key, person, event=name, timestamp=event.timestamp, properties=_flat(properties))


def _record(event: Event, names: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    def named(kind: str) -> str:
        return names.get(kind) or DEFAULT_EVENT_NAMES[kind]

    properties: dict[str, Any] = {}
    if event.kind == "pageview":
        properties = {"Viewed URL": event.url, "Referrer": event.referrer}
        name = named("pageview")
    elif event.kind in ("open", "click"):
        properties = dict(event.metadata)
        if event.kind == "click":
            properties["URL"] = event.url
        name = named(event.kind)
    elif event.kind == "conversion":
        properties = {"Billing Amount": event.revenue}
        name = event.name or named("conversion")
    elif event.kind == "exposure":
        properties = {"Experiment": event.name}
        name = named("exposure")
    else:
        name = event.name or ""  # no _n, as py-KISSmetrics sends a record() without an event name
    properties.update(event.properties)
    return name, properties


def _flat(properties: Mapping[str, Any]) -> dict[str, str]:
    """Query-string values: numbers and text as themselves, nested values as JSON, None left out."""
    flat: dict[str, str] = {}
    for name, value in properties.items():
        if value is None or name in _RESERVED:
            continue
        if isinstance(value, bool):
            flat[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            flat[name] = str(value)
        else:
            flat[name] = json.dumps(value, default=str, separators=(",", ":"))
    return flat


# --- the sink ---------------------------------------------------------------------------------------------
class KissmetricsSink:
    name = "kissmetrics"
    # One event per GET, as the API takes them; a failure then retries that event alone (no repeats).
    batch_size = 1

    def __init__(
        self,
        key: str,
        url: str = "https://trk.kissmetrics.io",
        *,
        event_names: Mapping[str, str] | None = None,
        # GETs in flight at once: the tracking API is built for browsers, many small requests in parallel.
        concurrency: int = 32,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.key = key
        self.url = url.rstrip("/")
        self.names = {**DEFAULT_EVENT_NAMES, **(event_names or {})}
        self.concurrency = concurrency
        self.timeout = timeout

    async def send(self, session: aiohttp.ClientSession, events: Sequence[Event]) -> Outcome:
        rejected: dict[str, str] = {}
        for event in events:
            try:
                built = request_for(event, self.key, self.names)
            except ValueError as exc:  # text no URL can carry (a lone surrogate): a dead letter, not a loop
                built = f"cannot be put in a KISSmetrics request: {exc}"
            if isinstance(built, str):
                rejected[event.id] = built
                continue
            path, query = built
            try:
                await exchange(session, "GET", f"{self.url}/{path}?{query}", encoded=True, timeout=self.timeout)
            except Rejected as exc:
                if len(events) == 1:
                    raise
                rejected[event.id] = str(exc)
        return Outcome(rejected)

    async def aclose(self) -> None:
        return None


def create_sink(settings: Settings) -> KissmetricsSink:
    if not settings.kissmetrics_key:
        raise ConfigError("TRACKGATE_KISSMETRICS_KEY", None, "required by the kissmetrics sink (your API key)")
    if not settings.kissmetrics_url.startswith(("http://", "https://")):
        raise ConfigError("TRACKGATE_KISSMETRICS_URL", settings.kissmetrics_url, "expected an http(s) URL")
    return KissmetricsSink(settings.kissmetrics_key, settings.kissmetrics_url)


# --- the py-KISSmetrics facade ----------------------------------------------------------------------------
class KissmetricsReply(Protocol):
    """What a call returns: urllib3's response (blocking, as py-KISSmetrics), a KissmetricsResponse (background)."""

    @property
    def status(self) -> int: ...

    @property
    def data(self) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class KissmetricsResponse:
    """The answer of a ``background=True`` call: accepted (202), handed to the dispatcher."""

    status: int
    data: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


_ACCEPTED = KissmetricsResponse(202)  # background=True: handed to the dispatcher, not yet sent


class Client:
    """py-KISSmetrics's ``Client``: same constructor, methods and requests; blocking unless ``background``.

    Blocking calls go through urllib3's ``PoolManager`` as py-KISSmetrics's do (``client.http``), so they
    answer urllib3's response (``.status``, ``.data``, ``.headers``), follow redirects, and fail with its
    errors (``MaxRetryError``). Fixed: a call waits ``timeout`` seconds at most (py-KISSmetrics: forever).
    ``close()`` (or ``with``) ends the kept-alive connections. Needs ``urllib3`` (the ``kissmetrics`` extra).
    """

    def __init__(
        self,
        key: str | None,
        trk_host: str = TRACKING_HOSTNAME,
        trk_scheme: str = TRACKING_SCHEME,
        *,
        # True: never touch the network in the caller's thread; submit Events to the dispatcher instead.
        background: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if trk_scheme not in ("http", "https"):
            raise ValueError("trk_scheme must be one of (http, https)")
        self.key = key
        self.trk_host = trk_host
        self.trk_scheme = trk_scheme
        self.background = background
        self.timeout = timeout
        # The urllib3.PoolManager, made here as py-KISSmetrics makes it (a background client needs none).
        self.http: Any = None if background else _pool_manager()

    def close(self) -> None:
        """Close the kept-alive connections (a later call opens new ones)."""
        if self.http is not None:
            self.http.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self,
        person: Any,
        event: Any,
        properties: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        path: str = RECORD_PATH,
    ) -> KissmetricsReply:
        if self.background:
            return self._submit(
                path,
                RECORD_PATH,
                Event(
                    "custom",
                    name=str(event) if event else "",
                    visitor=str(person),
                    properties=_as_py_kissmetrics_sends(properties),
                    timestamp=_when(timestamp),
                ),
            )
        return self._get(path, create_query(self.key, person, event=event, timestamp=timestamp, properties=properties))

    def set(
        self,
        person: Any,
        properties: Mapping[str, Any] | None = None,
        timestamp: Any = None,
        path: str = SET_PATH,
    ) -> KissmetricsReply:
        if self.background:
            if not properties:  # py-KISSmetrics sends a /s that sets nothing: nothing to keep or to lose
                return _ACCEPTED
            return self._submit(
                path,
                SET_PATH,
                Event(
                    "set",
                    visitor=str(person),
                    properties=_as_py_kissmetrics_sends(properties),
                    timestamp=_when(timestamp),
                ),
            )
        return self._get(path, create_query(self.key, person, timestamp=timestamp, properties=properties))

    def alias(self, person: Any, identity: Any, path: str = ALIAS_PATH) -> KissmetricsReply:
        if self.background:
            if not identity:  # py-KISSmetrics sends an /a naming no identity: nothing to keep or to lose
                return _ACCEPTED
            return self._submit(path, ALIAS_PATH, Event("alias", visitor=str(person), user_id=str(identity)))
        return self._get(path, create_query(self.key, person, identity=identity))

    def _submit(self, path: str, expected: str, event: Event) -> KissmetricsReply:
        if path != expected:
            raise ValueError(f"background=True sends to the standard path /{expected}, not /{path}")
        _dispatch_submit()(event)
        return _ACCEPTED

    def _get(self, path: str, query: str) -> KissmetricsReply:
        if self.http is None:  # a background client turned blocking
            self.http = _pool_manager()
        url = urllib.parse.urlunsplit((self.trk_scheme, self.trk_host, path, query, ""))  # as py-KISSmetrics
        response: KissmetricsReply = self.http.request("GET", url, timeout=self.timeout)
        return response


def _as_py_kissmetrics_sends(properties: Any) -> dict[str, Any]:
    """Property values as py-KISSmetrics writes them into the query (``str()``: ``True``, ``None``, ``[1, 2]``;
    bytes as their text; ``inf``), so that a background call stores the same values as a blocking one (the
    sink's own format for other events writes ``true`` and JSON, and leaves None out). Properties may be
    anything ``dict()`` takes, as py-KISSmetrics's ``urlencode`` takes pairs."""
    return {name: _as_sent(value) for name, value in dict(properties or {}).items()}


def _as_sent(value: Any) -> Any:
    if type(value) is float and not math.isfinite(value):
        return str(value)  # (not JSON: the event could not be spooled)
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")  # urlencode quotes bytes as they are
    return str(value)


def _pool_manager() -> Any:
    try:
        import urllib3
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("blocking KISSmetrics calls need urllib3: pip install 'trackgate[kissmetrics]'") from None
    return urllib3.PoolManager()


def _when(timestamp: Any) -> float:
    # py-KISSmetrics back-dates only with a truthy timestamp; so do we.
    return float(timestamp) if timestamp else time.time()


def _dispatch_submit() -> Callable[[Event], None]:
    # Looked up at call time: the dispatcher is optional for blocking use of the facade.
    submit: Callable[[Event], None] = importlib.import_module("trackgate.dispatch").submit
    return submit


_PORT_SCHEMES = {"80": "http", "443": "https"}


class ClientCompat:
    """py-KISSmetrics's ``ClientCompat`` (also exported as ``KM``): the older identify-then-record API."""

    def __init__(
        self,
        key: str | None,
        host: str | None = None,
        http_timeout: float | None = None,
        logging: bool = True,
        *,
        background: bool = False,
    ) -> None:
        self.key = key
        if host:
            trk_host, trk_port = host.split(":")
            try:
                trk_scheme = _PORT_SCHEMES[trk_port]
            except KeyError:
                raise ValueError("port in supplied host is not 80 or 443") from None
        else:
            trk_host, trk_scheme = TRACKING_HOSTNAME, "http"
        self.client = Client(
            key=key,
            trk_host=trk_host,
            trk_scheme=trk_scheme,
            background=background,
            timeout=http_timeout if http_timeout is not None else DEFAULT_TIMEOUT,
        )
        self.identity: Any = None

    def identify(self, identity: Any) -> None:
        self.identity = identity

    def record(
        self, action: Any, props: Mapping[str, Any] | None = None, path: str = RECORD_PATH, resp: bool = False
    ) -> KissmetricsReply | None:
        self.check_id_key()
        response = self.client.record(person=self.identity, event=action, properties=props or {}, path=path)
        return response if resp else None

    def set(self, data: Mapping[str, Any], path: str = SET_PATH, resp: bool = False) -> KissmetricsReply | None:
        self.check_id_key()
        response = self.client.set(person=self.identity, properties=data, path=path)
        return response if resp else None

    def alias(self, name: Any, alias_to: Any, path: str = ALIAS_PATH, resp: bool = False) -> KissmetricsReply | None:
        self.check_init()
        response = self.client.alias(person=name, identity=alias_to, path=path)
        return response if resp else None

    def log_file(self) -> str:
        return "/tmp/kissmetrics_error.log"  # noqa: S108 — py-KISSmetrics's fixed answer, kept for callers

    def reset(self) -> None:
        self.identity = None
        self.key = None

    def check_identify(self) -> None:
        if self.identity is None:
            # A bare Exception, as py-KISSmetrics raises: callers catch exactly that.
            raise Exception("Need to identify first (KM.identify <user>)")

    def check_init(self) -> None:
        if self.key is None:
            raise Exception("Need to initialize first (KM.init <your_key>)")

    def check_id_key(self) -> None:
        self.check_init()
        self.check_identify()

    def now(self) -> datetime.datetime:
        """UTC now without a time zone, as py-KISSmetrics's ``datetime.utcnow()`` gave."""
        return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


KM = ClientCompat
