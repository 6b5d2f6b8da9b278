"""A small asynchronous Kubernetes client for the operator's own requests (aiohttp, as kopf).

Credentials come from kopf's login (kubeconfig or in-cluster ServiceAccount), re-read on a 401
(projected tokens rotate). Every request is counted in metrics; a failure is one log line, never
a traceback: an unreachable apiserver is logged once when it goes and once when it is back.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from streamflow_operator import metrics
from streamflow_operator.children import FIELD_MANAGER, ChildKind

log = logging.getLogger("streamflow.kube")
JSON = "application/json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"  # JSON is YAML
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiError(Exception):
    """An answer other than 2xx (``status`` 0: the apiserver could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


def _file(data: str | bytes) -> str:
    """Inline certificate data -> a private temporary file (ssl loads certificates from files)."""
    raw = data.encode() if isinstance(data, str) else data
    fd, path = tempfile.mkstemp(prefix="streamflow-", suffix=".pem")
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    return path


class Kube:
    def __init__(self, login: Callable[[], Any], concurrency: int = 32) -> None:
        self._login = login
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._headers: dict[str, str] = {}
        self._down_since: float | None = None

    @property
    def down_since(self) -> float | None:
        """Since when (time.monotonic) the operator's own requests find no apiserver."""
        return self._down_since

    async def _connect(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        info = self._login()
        context = ssl.create_default_context()
        if info.ca_path:
            context.load_verify_locations(cafile=os.fsdecode(info.ca_path))
        elif info.ca_data:
            data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
            context.load_verify_locations(cadata=data)
        if info.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert = info.certificate_path or (info.certificate_data and _file(info.certificate_data))
        key = info.private_key_path or (info.private_key_data and _file(info.private_key_data))
        if cert and key:
            context.load_cert_chain(os.fsdecode(cert), os.fsdecode(key))
        self._headers = {"Accept": JSON, "User-Agent": FIELD_MANAGER}
        if info.token:
            self._headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        self._server = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=30, connect=5),
            json_serialize=lambda v: orjson.dumps(v).decode(),
        )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        kind: str = "",
    ) -> Any:
        session = await self._connect()
        data = orjson.dumps(body) if body is not None else None
        headers = {**self._headers, **({"Content-Type": content_type} if data else {})}
        try:
            async with session.request(
                method, self._server + path, params=params, data=data, headers=headers
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            metrics.API_ERRORS.labels(reason="unreachable").inc()
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("apiserver unreachable: %s", str(exc) or type(exc).__name__)
            raise ApiError(0, "Unreachable", f"apiserver unreachable: {exc}") from None
        if self._down_since is not None:
            log.warning(
                "apiserver reachable again after %.1fs", time.monotonic() - self._down_since
            )
            self._down_since = None
        metrics.API_REQUESTS.labels(verb=method, kind=kind, code=str(status)).inc()
        if method in WRITES:
            metrics.API_WRITES.labels(verb=method, kind=kind).inc()
        if status == 401:  # credentials expired (a rotated token): log in again next time
            await self.close()
        if status >= 300:
            try:
                doc = orjson.loads(payload)
                message, reason = str(doc.get("message", "")), str(doc.get("reason", ""))
            except (orjson.JSONDecodeError, AttributeError):
                message, reason = payload[:300].decode(errors="replace"), ""
            metrics.API_ERRORS.labels(reason=str(status)).inc()
            raise ApiError(status, reason or str(status), message)
        return orjson.loads(payload) if payload else None

    # ---- verbs ----------------------------------------------------------------------------
    async def get(self, kind: ChildKind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.request(
                "GET", kind.path(namespace, name), kind=kind.kind
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list(self, kind: ChildKind, selector: str) -> list[dict[str, Any]]:
        doc = await self.request(
            "GET", kind.path(None), params={"labelSelector": selector}, kind=kind.kind
        )
        items: list[dict[str, Any]] = doc.get("items") or []
        for item in items:  # a list's items carry neither
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    async def list_metadata(self, kind: ChildKind, selector: str) -> tuple[str, set[str]]:
        """(the list's resourceVersion, ``ns/name`` of every object): only metadata travels."""
        session = await self._connect()
        headers = {
            **self._headers,
            "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        }
        try:
            async with session.get(
                self._server + kind.path(None), params={"labelSelector": selector}, headers=headers
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            metrics.API_ERRORS.labels(reason="unreachable").inc()
            raise ApiError(0, "Unreachable", f"apiserver unreachable: {exc}") from None
        metrics.API_REQUESTS.labels(verb="GET", kind=kind.kind, code=str(status)).inc()
        if status >= 300:
            metrics.API_ERRORS.labels(reason=str(status)).inc()
            raise ApiError(status, str(status), payload[:300].decode(errors="replace"))
        doc = orjson.loads(payload)
        names = {
            f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}"
            for i in doc.get("items") or []
        }
        return str(doc.get("metadata", {}).get("resourceVersion", "")), names

    async def create(self, kind: ChildKind, manifest: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST",
            kind.path(manifest["metadata"]["namespace"]),
            params={"fieldManager": FIELD_MANAGER},
            body=manifest,
            kind=kind.kind,
        )
        return result

    async def apply(self, kind: ChildKind, manifest: dict[str, Any]) -> dict[str, Any]:
        md = manifest["metadata"]
        result: dict[str, Any] = await self.request(
            "PATCH",
            kind.path(md["namespace"], md["name"]),
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type=APPLY,
            kind=kind.kind,
        )
        return result

    async def patch(
        self, path: str, body: Any, content_type: str = MERGE, kind: str = ""
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH", path, body=body, content_type=content_type, kind=kind
        )
        return result

    async def delete(self, kind: ChildKind, namespace: str, name: str, uid: str) -> Any:
        """Delete exactly the object with ``uid`` (never a replacement with the same name)."""
        try:
            return await self.request(
                "DELETE",
                kind.path(namespace, name),
                body={"propagationPolicy": "Background", "preconditions": {"uid": uid}},
                kind=kind.kind,
            )
        except ApiError as exc:
            if exc.status in (404, 409):  # gone already, or a different object now
                return None
            raise
