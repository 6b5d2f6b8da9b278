"""Readiness that reflects the operator's view of the cluster, and the HTTP endpoint serving it.

kopf's ``--liveness`` endpoint says the process is alive; restarting the pod during an apiserver
outage would not help, so it stays a liveness probe. Readiness is stricter: the operator is ready
when its cache has been filled, its workers run, its own requests reach the apiserver and none of
kopf's watches failed in the last few seconds (kopf retries a failed watch; until it succeeds
again the operator does not see changes, which is what "not ready" should say). The verdict is a
pure function of what the operator recorded, so serving it costs no request to the apiserver.

The same aiohttp server, on the metrics port, serves ``/metrics`` (prometheus_client's text
format) and ``/readyz`` (200 ``ok`` or 503 with the reason), inside the operator's event loop: a
blocked loop also fails the probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# A watch that failed this recently makes the operator unready; kopf retries within 1-5 s, so a
# healthy watch keeps quiet for longer than this once it reconnected.
WATCH_GRACE_SECONDS = 10.0


@dataclass
class Readiness:
    """What the operator recorded about itself; ``verdict`` turns it into ready or not."""

    clock: Callable[[], float] = time.monotonic
    cache_filled: bool = False
    watch_failed_at: float | None = None
    apiserver_down_since: Callable[[], float | None] = lambda: None
    tasks: Sequence[asyncio.Task[None]] = field(default_factory=list)

    def watch_failed(self) -> None:
        self.watch_failed_at = self.clock()

    def verdict(self) -> tuple[bool, str]:
        now = self.clock()
        if not self.cache_filled:
            return False, "filling the cache from the apiserver"
        for task in self.tasks:
            if task.done():
                return False, f"task {task.get_name()} stopped"
        down = self.apiserver_down_since()
        if down is not None:
            return False, f"apiserver unreachable for {now - down:.0f}s"
        if self.watch_failed_at is not None and now - self.watch_failed_at < WATCH_GRACE_SECONDS:
            return False, f"a watch failed {now - self.watch_failed_at:.0f}s ago (kopf retries)"
        return True, "ok"


async def serve(readiness: Readiness, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Start ``/metrics`` and ``/readyz`` on ``host:port``; the caller cleans the runner up."""

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def ready(_: web.Request) -> web.Response:
        ok, reason = readiness.verdict()
        return web.Response(text=reason + "\n", status=200 if ok else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/readyz", ready)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
