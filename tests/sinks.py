"""Real HTTP receivers that speak each sink's protocol, for tests, scripts and benchmarks.

Each receiver is an aiohttp server on a free loopback port, run in its own thread with its own event loop
(so a test may block on the dispatcher while the receiver answers). It records what it received and can
be told to fail:

    with WebhookReceiver(secret="s") as hook:          # or: async with WebhookReceiver() as hook
        ...send events to hook.url...
        hook.fail(503, times=2)                        # the next two requests get 503
        hook.fail(429, retry_after=1)                  # every request gets 429 until hook.recover()
        hook.fail("close")                             # connections dropped without an answer
        hook.down(); hook.up()                         # connection refused, then back on the same port
        assert hook.wait_delivered(10)                 # bounded wait, never a timing assertion
        assert not hook.duplicates()                   # no event accepted twice under the same key

"Delivered" means accepted with a 2xx answer; the dedup key is the event id for webhooks, the decoded
request (path and parameters) for KISSmetrics and the request line for Matomo, whose wire formats carry
no event id — give events a distinct property or URL when a test counts duplicates there.

Pytest fixtures: ``webhook_receiver`` (checks signatures made with ``WEBHOOK_SECRET``),
``kissmetrics_receiver``, ``matomo_receiver`` (site ``MATOMO_SITE_ID``, token ``MATOMO_TOKEN``), available
everywhere once tests/conftest.py says ``pytest_plugins = ("sinks",)``; or make a local fixture with
``with KissmetricsReceiver() as receiver: yield receiver``.

``GET /_received`` on any receiver answers ``{"delivered": n, "unique": u, "received": r}`` for
receivers living in another process.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

Failure = int | Literal["close"]

WEBHOOK_SECRET = "test-webhook-secret"
KISSMETRICS_KEY = "test-km-key"
MATOMO_SITE_ID = 7
MATOMO_TOKEN = "test-matomo-token"

# What trk.kissmetrics.io answers: a transparent 1x1 GIF.
GIF_1X1 = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


@dataclass(frozen=True)
class Received:
    """One HTTP request as the receiver saw it, and what it answered."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]  # decoded, in order
    headers: Mapping[str, str]
    body: bytes
    status: int  # what the receiver answered (0: connection dropped)
    accepted: tuple[str, ...] = ()  # dedup keys of the items this request delivered

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _FailurePlan:
    failure: Failure
    times: int | None  # None: until recover()
    retry_after: float | None
    body: str = field(default="")
    location: str | None = None  # a redirect's target


class Receiver:
    """Base: lifecycle in a thread, failure modes, recording and dedup views."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> None:
        self.host = host
        self.port = port
        # Simulated network round trip per request, for benchmarks that want a realistic remote service.
        self.latency = latency
        self._cond = threading.Condition()
        self._records: list[Received] = []
        self._delivered: list[str] = []
        self._plans: collections.deque[_FailurePlan] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(target=loop.run_forever, name=f"{type(self).__name__}", daemon=True)
            self._thread.start()
        self.up()
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self.down()
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()
        self._loop = None
        self._thread = None

    def up(self) -> None:
        """Listen (again) on the same port."""
        self._run(self._bind())

    def down(self) -> None:
        """Stop listening and close every open connection: clients get connection refused/reset."""
        self._run(self._unbind())

    @property
    def is_up(self) -> bool:
        return self._runner is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url

    # --- failure modes --------------------------------------------------------------------------------
    def fail(
        self,
        failure: Failure,
        *,
        times: int | None = None,
        retry_after: float | None = None,
        body: str = "",
        location: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (all, when None) with ``failure``: an HTTP status, or "close"
        to drop the connection without an answer. Plans queue up: ``fail(500, times=1); fail(429, times=1)``."""
        with self._cond:
            self._plans.append(_FailurePlan(failure, times, retry_after, body, location))

    def recover(self) -> None:
        with self._cond:
            self._plans.clear()

    def _take_plan(self) -> _FailurePlan | None:
        with self._cond:
            while self._plans:
                plan = self._plans[0]
                if plan.times is None:
                    return plan
                if plan.times > 0:
                    plan.times -= 1
                    if plan.times == 0:
                        self._plans.popleft()
                    return plan
                self._plans.popleft()
            return None

    # --- views ----------------------------------------------------------------------------------------
    @property
    def received(self) -> list[Received]:
        """Every request, failed ones included."""
        with self._cond:
            return list(self._records)

    @property
    def delivered(self) -> list[str]:
        """Dedup keys of every accepted item, repeats included, in arrival order."""
        with self._cond:
            return list(self._delivered)

    def unique(self) -> set[str]:
        with self._cond:
            return set(self._delivered)

    def duplicates(self) -> dict[str, int]:
        """Keys accepted more than once, with their counts (empty when no item arrived twice)."""
        with self._cond:
            counts = collections.Counter(self._delivered)
        return {key: n for key, n in counts.items() if n > 1}

    def wait_delivered(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` distinct items were accepted; False when ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: len(set(self._delivered)) >= count, timeout)

    def clear(self) -> None:
        with self._cond:
            self._records.clear()
            self._delivered.clear()

    # --- server ---------------------------------------------------------------------------------------
    def _run(self, coro: Any) -> Any:
        assert self._loop is not None, "start() the receiver first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _bind(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_received", self._count)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def _unbind(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _count(self, request: web.Request) -> web.Response:
        with self._cond:
            counts = {
                "delivered": len(self._delivered),
                "unique": len(set(self._delivered)),
                "received": len(self._records),
            }
        return web.json_response(counts)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.latency:
            await asyncio.sleep(self.latency)
        plan = self._take_plan()
        query = tuple(parse_qsl(request.query_string, keep_blank_values=True))
        if plan is None:
            response, accepted = self._answer(request.method, request.path, query, request.headers, body)
        elif plan.failure == "close":
            self._record(request, query, body, 0, ())
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        else:
            headers = {"Retry-After": _seconds(plan.retry_after)} if plan.retry_after is not None else {}
            if plan.location is not None:
                headers["Location"] = plan.location
            response = web.Response(
                status=plan.failure, text=plan.body or f"failure mode {plan.failure}", headers=headers
            )
            accepted = ()
        self._record(request, query, body, response.status, accepted)
        return response

    def _record(
        self,
        request: web.Request,
        query: tuple[tuple[str, str], ...],
        body: bytes,
        status: int,
        accepted: Sequence[str],
    ) -> None:
        record = Received(request.method, request.path, query, dict(request.headers), body, status, tuple(accepted))
        with self._cond:
            self._records.append(record)
            self._delivered.extend(accepted)
            self._cond.notify_all()

    def _answer(
        self, method: str, path: str, query: tuple[tuple[str, str], ...], headers: Mapping[str, str], body: bytes
    ) -> tuple[web.Response, Sequence[str]]:
        raise NotImplementedError


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class WebhookReceiver(Receiver):
    """Accepts JSON POSTs on any path; with a secret, answers 401 to a missing or wrong
    ``X-Trackgate-Signature: sha256=<hmac>``. Dedup key: the payload's ``id``."""

    def __init__(self, *, secret: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.secret = secret

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def payloads(self) -> list[dict[str, Any]]:
        """Bodies of the accepted requests, in arrival order."""
        return [r.json() for r in self.received if r.accepted]

    def _answer(
        self, method: str, path: str, query: tuple[tuple[str, str], ...], headers: Mapping[str, str], body: bytes
    ) -> tuple[web.Response, Sequence[str]]:
        if method != "POST":
            return web.Response(status=405), ()
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(headers.get("X-Trackgate-Signature", ""), expected):
                return web.Response(status=401, text="bad signature"), ()
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="body is not JSON"), ()
        key = str(payload.get("id", "")) if isinstance(payload, dict) else ""
        return web.json_response({"ok": True}), (key or hashlib.sha1(body).hexdigest(),)


class KissmetricsReceiver(Receiver):
    """The KISSmetrics tracking API: GET /e (record), /s (set), /a (alias); answers 200 with a 1x1 GIF
    like trk.kissmetrics.io. Dedup key: path and decoded parameters."""

    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """(path, decoded parameters) of the accepted requests, in arrival order."""
        return [(r.path, r.params) for r in self.received if r.accepted]

    def _answer(
        self, method: str, path: str, query: tuple[tuple[str, str], ...], headers: Mapping[str, str], body: bytes
    ) -> tuple[web.Response, Sequence[str]]:
        if path not in ("/e", "/s", "/a"):
            return web.Response(status=404), ()
        if method != "GET":
            return web.Response(status=405), ()
        key = path + "?" + json.dumps(sorted(query))
        return web.Response(body=GIF_1X1, content_type="image/gif"), (key,)


def _older_than_a_day(cdt: str | None) -> bool:
    if cdt is None:
        return False
    try:
        return time.time() - float(cdt) > 86400
    except ValueError:
        return True  # (a datetime string: not what the sink sends; treated as needing the token)


class MatomoReceiver(Receiver):
    """Matomo's bulk tracking API: POST /matomo.php with ``{"requests": [...], "token_auth": ...}``.

    A request is invalid when idsite is missing or not ``site_id``, or when it uses cip, or a cdt older
    than 24 hours, without the right token (Matomo's defaults); a wrong token_auth answers 400 like Matomo. Answers
    ``{"status": "success", "tracked": N, "invalid": M, "invalid_indices": [...]}``.
    Dedup key: the request line as sent."""

    def __init__(self, *, site_id: int = MATOMO_SITE_ID, token: str | None = MATOMO_TOKEN, **kw: Any) -> None:
        super().__init__(**kw)
        self.site_id = site_id
        self.token = token

    @property
    def url(self) -> str:
        return self.base_url

    def tracked(self) -> list[dict[str, str]]:
        """Decoded parameters of every tracked request, in arrival order."""
        return [dict(parse_qsl(key.lstrip("?"), keep_blank_values=True)) for key in self.delivered]

    def _answer(
        self, method: str, path: str, query: tuple[tuple[str, str], ...], headers: Mapping[str, str], body: bytes
    ) -> tuple[web.Response, Sequence[str]]:
        if path != "/matomo.php":
            return web.Response(status=404), ()
        if method != "POST":
            return web.Response(status=405), ()
        try:
            bulk = json.loads(body)
            requests = bulk["requests"]
            assert isinstance(requests, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return web.json_response({"status": "error", "message": 'expected {"requests": [...]}'}, status=400), ()
        token = bulk.get("token_auth")
        authorised = token is not None and token == self.token
        if token is not None and not authorised:
            return web.json_response({"status": "error", "message": "token_auth is not valid"}, status=400), ()
        tracked: list[str] = []
        invalid: list[int] = []
        site = str(self.site_id)
        for index, item in enumerate(requests):
            # Only the parameter names are needed here, and they are plain ASCII: no decoding, so the
            # receiver keeps up with a bulk sender in benchmarks. tracked() decodes on demand.
            line = str(item)
            params = dict(pair.partition("=")[::2] for pair in line.lstrip("?").split("&"))
            needs_token = "cip" in params or "token_auth" in params or _older_than_a_day(params.get("cdt"))
            if params.get("idsite") != site or (needs_token and not authorised):
                invalid.append(index)
            else:
                tracked.append(line)
        answer = {"status": "success", "tracked": len(tracked), "invalid": len(invalid), "invalid_indices": invalid}
        return web.json_response(answer), tracked


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=WEBHOOK_SECRET) as receiver:
        yield receiver


@pytest.fixture
def kissmetrics_receiver() -> Iterator[KissmetricsReceiver]:
    with KissmetricsReceiver() as receiver:
        yield receiver


@pytest.fixture
def matomo_receiver() -> Iterator[MatomoReceiver]:
    with MatomoReceiver() as receiver:
        yield receiver
