"""The canary search itself: it must find the canary wherever it is put, or every other test here is void."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import urllib.parse
import urllib.request

import pytest
import redis

from tests.security.harness import Canary
from tests.support.http_sink import HttpSink
from worker.config import Settings


async def test_nothing_planted_means_nothing_found(canary: Canary, settings: Settings) -> None:
    assert os.environ["VAULT_TOKEN"] == canary.value
    await canary.assert_absent(settings)


@pytest.mark.parametrize("where", ["log", "redis", "sink", "text"])
async def test_the_canary_is_found_wherever_it_is_put(canary: Canary, settings: Settings, http_sink: HttpSink,
                                                      where: str) -> None:
    if where == "log":
        logging.getLogger("tests.hostile").warning("token %s", canary.value)
    elif where == "redis":
        with redis.Redis.from_url(settings.redis_url) as client:
            client.set(f"{settings.redis_prefix}:loot", json.dumps({"t": canary.value}))
    elif where == "sink":
        auth = base64.b64encode(f"user:{canary.value}".encode()).decode()
        request = urllib.request.Request(f"{http_sink.url}/x", headers={"Authorization": f"Basic {auth}"})
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=5).read())
    texts = {"cli output": f"leaked={urllib.parse.quote(canary.value)}"} if where == "text" else {}
    with pytest.raises(AssertionError, match="the canary leaked"):
        await canary.assert_absent(settings, sink=http_sink, texts=texts)
