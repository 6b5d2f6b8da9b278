"""Readiness: a pure verdict from what the operator recorded (the e2e outage test checks the
served endpoint against a real apiserver going away and coming back)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from streamflow_operator import metrics as operator_metrics
from streamflow_operator.health import WATCH_GRACE_SECONDS, Readiness, serve
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ready_only_once_the_cache_is_filled() -> None:
    readiness = Readiness(clock=Clock())
    assert readiness.verdict() == (False, "filling the cache from the apiserver")
    readiness.cache_filled = True
    assert readiness.verdict() == (True, "ok")


def test_a_failed_watch_makes_it_unready_until_it_stays_quiet() -> None:
    clock = Clock()
    readiness = Readiness(clock=clock, cache_filled=True)
    readiness.watch_failed()
    clock.now += 3
    ok, reason = readiness.verdict()
    assert not ok and "a watch failed 3s ago" in reason
    clock.now += WATCH_GRACE_SECONDS
    assert readiness.verdict() == (True, "ok")


def test_an_unreachable_apiserver_makes_it_unready() -> None:
    clock = Clock()
    down: list[float | None] = [None]
    readiness = Readiness(clock=clock, cache_filled=True, apiserver_down_since=lambda: down[0])
    down[0] = clock.now - 42
    assert readiness.verdict() == (False, "apiserver unreachable for 42s")
    down[0] = None
    assert readiness.verdict()[0]


def test_a_stopped_task_makes_it_unready() -> None:
    async def scenario() -> tuple[bool, str]:
        async def crash() -> None:
            raise RuntimeError("boom")

        task = asyncio.create_task(crash(), name="streamflow-workers")
        await asyncio.gather(task, return_exceptions=True)
        return Readiness(clock=Clock(), cache_filled=True, tasks=[task]).verdict()

    assert asyncio.run(scenario()) == (False, "task streamflow-workers stopped")


def test_the_endpoint_serves_the_verdict_and_the_metrics() -> None:
    async def scenario() -> list[tuple[int, str]]:
        readiness = Readiness(clock=Clock())
        port = free_port()
        runner = await serve(readiness, port, host="127.0.0.1")

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        try:
            out = [await asyncio.to_thread(get, "/readyz")]
            readiness.cache_filled = True
            out.append(await asyncio.to_thread(get, "/readyz"))
            out.append(await asyncio.to_thread(get, "/metrics"))
            return out
        finally:
            await runner.cleanup()

    unready, ready, metrics = asyncio.run(scenario())
    assert unready == (503, "filling the cache from the apiserver\n")
    assert ready == (200, "ok\n")
    assert metrics[0] == 200
    assert f"{operator_metrics.QUEUE_DEPTH._name} " in metrics[1]  # the operator's registry
