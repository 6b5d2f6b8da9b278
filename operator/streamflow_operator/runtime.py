"""The controller's machinery: a cache fed by watches and a work queue of pipelines, in the
manner of controller-runtime (an informer cache; ``Owns()``: a child's event enqueues its
pipeline). No logic about FraudPipelines lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamflow_operator import metrics
from streamflow_operator.children import key_of
from streamflow_operator.render import LABEL_PIPELINE_UID, Manifest

PipelineKey = tuple[str, str]  # (namespace, name)


def _newer(a: str | None, b: str | None) -> bool:
    """Is resourceVersion ``a`` older than ``b``? Only to drop a watch event that arrives after
    our own write's response (the apiserver's versions are etcd revisions: integers)."""
    return bool(a and b and a.isdigit() and b.isdigit() and int(a) < int(b))


@dataclass
class Store:
    """Children by key (``Kind/ns/name``) and by owning pipeline uid."""

    objects: dict[str, Manifest] = field(default_factory=dict)
    by_owner: dict[str, set[str]] = field(default_factory=dict)

    def put(self, obj: Manifest) -> bool:
        """Store a child; False when the store already had this version or a newer one (the
        watch's echo of our own write: nothing to react to)."""
        key = key_of(obj)
        old = self.objects.get(key)
        rv = obj["metadata"].get("resourceVersion")
        if old is not None and (
            rv == old["metadata"].get("resourceVersion")
            or _newer(rv, old["metadata"].get("resourceVersion"))
        ):
            return False
        self._unindex(key, old)
        self.objects[key] = obj
        owner = (obj["metadata"].get("labels") or {}).get(LABEL_PIPELINE_UID)
        if owner:
            self.by_owner.setdefault(owner, set()).add(key)
        return True

    def remove(self, key: str) -> None:
        self._unindex(key, self.objects.pop(key, None))

    def _unindex(self, key: str, old: Manifest | None) -> None:
        owner = ((old or {}).get("metadata", {}).get("labels") or {}).get(LABEL_PIPELINE_UID)
        if owner and owner in self.by_owner:
            self.by_owner[owner].discard(key)
            if not self.by_owner[owner]:
                del self.by_owner[owner]

    def get(self, key: str) -> Manifest | None:
        return self.objects.get(key)

    def owned(self, uid: str) -> list[Manifest]:
        return [self.objects[k] for k in sorted(self.by_owner.get(uid, ()))]

    def missing(self, kind: str, present: set[str], list_version: str) -> list[Manifest]:
        """Objects of ``kind`` the store holds but a list (at ``list_version``) did not show:
        deleted while a watch was down (a relist reports no deletions)."""
        gone = []
        for key, obj in list(self.objects.items()):
            if not key.startswith(f"{kind}/") or key.split("/", 1)[1] in present:
                continue
            if _newer(list_version, obj["metadata"].get("resourceVersion")):
                continue  # written after the list was taken
            gone.append(obj)
        return gone

    def replace_kind(self, kind: str, objects: Iterable[Manifest]) -> None:
        """A fresh list of one kind (the listed, not watched, Secrets) replaces the old one."""
        for key in [k for k in self.objects if k.startswith(f"{kind}/")]:
            self.remove(key)
        for obj in objects:
            self.put(obj)


class WorkQueue:
    """Pipelines waiting for a pass: each key at most once in the queue and never processed by
    two workers at once (an add during its pass re-queues it after); per-key exponential
    backoff after failures, delayed adds for waits."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[PipelineKey] = asyncio.Queue()
        self._queued: set[PipelineKey] = set()
        self._active: set[PipelineKey] = set()
        self._dirty: set[PipelineKey] = set()
        self._failures: dict[PipelineKey, int] = {}
        self._timers: dict[PipelineKey, asyncio.TimerHandle] = {}

    def add(self, key: PipelineKey) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))

    def add_after(self, key: PipelineKey, delay: float) -> None:
        timer = self._timers.get(key)
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if timer is not None and timer.when() <= when:
            return  # an earlier wake-up is already due
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: PipelineKey) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def backoff(self, key: PipelineKey, cap: float = 10.0) -> float:
        """Re-queue after a failure: 0.25 s, 0.5 s, 1 s ... ``cap``."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(cap, 0.25 * float(2 ** min(n, 16)))
        self.add_after(key, delay)
        return delay

    def forget(self, key: PipelineKey) -> None:
        """A pass succeeded: the next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    def drop(self, key: PipelineKey) -> None:
        """The pipeline is gone."""
        self.forget(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def get(self) -> PipelineKey:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        metrics.QUEUE_DEPTH.set(len(self._queued))
        metrics.IN_PROGRESS.set(len(self._active))
        return key

    def done(self, key: PipelineKey) -> None:
        self._active.discard(key)
        metrics.IN_PROGRESS.set(len(self._active))
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def idle(self) -> bool:
        return not self._queued and not self._active

    def __len__(self) -> int:
        return len(self._queued)


def _malloc_trim() -> Callable[[], Any] | None:
    """glibc's malloc_trim: a burst of large payloads (model ConfigMaps are ~100 KB each) leaves
    freed memory in the heap; returning it keeps the operator's RSS at what it holds."""
    try:
        import ctypes  # noqa: PLC0415

        trim: Callable[[int], Any] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


async def run_workers(
    queue: WorkQueue, n: int, work: Callable[[PipelineKey], Awaitable[Any]]
) -> None:
    """``n`` workers taking keys from the queue until cancelled; when the queue runs dry after
    a burst, freed memory goes back to the system."""
    trim = _malloc_trim()
    busy = False

    async def worker() -> None:
        nonlocal busy
        while True:
            key = await queue.get()
            busy = True
            try:
                await work(key)
            finally:
                queue.done(key)
            if trim is not None and busy and queue.idle():
                busy = False
                trim()

    tasks = [asyncio.create_task(worker(), name=f"streamflow-worker-{i}") for i in range(n)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
