"""The test receivers themselves: other tests trust them to count, fail and restart as they say."""

from __future__ import annotations

import json

import aiohttp
import pytest
from sinks import MATOMO_SITE_ID, MATOMO_TOKEN, KissmetricsReceiver, MatomoReceiver, WebhookReceiver

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]


async def post(session: aiohttp.ClientSession, url: str, payload: object) -> int:
    async with session.post(url, data=json.dumps(payload).encode()) as response:
        return response.status


async def test_failure_plans_run_in_order_then_the_receiver_accepts() -> None:
    async with WebhookReceiver() as hook, aiohttp.ClientSession() as session:
        hook.fail(500, times=1)
        hook.fail(429, times=2, retry_after=7)
        answers = []
        for _ in range(4):
            async with session.post(hook.url, data=b'{"id": "a"}') as response:
                answers.append((response.status, response.headers.get("Retry-After")))
        assert answers == [(500, None), (429, "7"), (429, "7"), (200, None)]
        assert hook.delivered == ["a"]


async def test_duplicates_and_bounded_waits() -> None:
    async with WebhookReceiver() as hook, aiohttp.ClientSession() as session:
        for event_id in ("a", "b", "a"):
            await post(session, hook.url, {"id": event_id})
        assert hook.duplicates() == {"a": 2}
        assert hook.unique() == {"a", "b"}
        assert hook.wait_delivered(2, timeout=1)
        assert not hook.wait_delivered(3, timeout=0.05)


async def test_down_refuses_and_up_listens_on_the_same_port() -> None:
    async with WebhookReceiver() as hook, aiohttp.ClientSession() as session:
        port = hook.port
        hook.down()
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, hook.url, {"id": "a"})
        hook.up()
        assert hook.port == port
        assert await post(session, hook.url, {"id": "a"}) == 200


async def test_kissmetrics_receiver_speaks_only_the_tracking_paths() -> None:
    async with KissmetricsReceiver() as km, aiohttp.ClientSession() as session:
        async with session.get(km.base_url + "/x?_k=1") as response:
            assert response.status == 404
        async with session.get(km.base_url + "/s?_k=k&_p=a+b&Plan=Pro%26Co") as response:
            assert (response.status, response.content_type) == (200, "image/gif")
        assert km.requests() == [("/s", {"_k": "k", "_p": "a b", "Plan": "Pro&Co"})]


async def test_matomo_receiver_judges_each_request_like_matomo() -> None:
    async with MatomoReceiver() as matomo, aiohttp.ClientSession() as session:
        site = MATOMO_SITE_ID
        lines = [f"?idsite={site}&rec=1", "?rec=1", f"?idsite={site}&cip=192.0.2.1", f"?idsite={site + 1}&rec=1"]
        async with session.post(matomo.url + "/matomo.php", json={"requests": lines}) as response:
            answer = await response.json()
        assert answer == {"status": "success", "tracked": 1, "invalid": 3, "invalid_indices": [1, 2, 3]}
        async with session.post(
            matomo.url + "/matomo.php", json={"requests": lines[2:3], "token_auth": MATOMO_TOKEN}
        ) as response:
            assert (await response.json())["tracked"] == 1
        async with session.post(matomo.url + "/matomo.php", json={"requests": [], "token_auth": "no"}) as response:
            assert response.status == 400
        assert [t["idsite"] for t in matomo.tracked()] == [str(site), str(site)]
