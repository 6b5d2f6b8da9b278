"""Reconcile one FraudPipeline: observe -> plan (pure, plan.py) -> apply -> status (status.py).

A pass reads the children from the watch-fed cache and writes only what differs: a child is
created (POST: never a takeover, an existing object answers 409) when missing, applied with
server-side apply when its rendered manifest or its live state moved, and left alone otherwise.
An object under a child's name that is not proven ours is never written or deleted: the pass
reports the conflict and goes no further with that child. Pruning and the finalizer's deletion
touch only objects proven ours, in every namespace, each by its uid.

Inputs are verified before they reach a FlinkDeployment: an invalid spec leaves every child as it
is; an invalid model keeps the last good one mounted (the Flink Kubernetes Operator's "last good
spec" behaviour). The pass ends with at most one status write, skipped when nothing changed.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import ValidationError

from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH, ModelArtifactError
from streamflow_jobs.model.loader import verify_model as verify_artifact  # either model kind
from streamflow_operator import cel, metrics
from streamflow_operator.children import (
    BY_KIND,
    FIELD_MANAGER,
    WATCH_SELECTOR,
    describe,
    foreign_message,
    is_ours,
    key_of,
    slim,
)
from streamflow_operator.kube import JSON_PATCH, ApiError, Kube
from streamflow_operator.plan import Applied, decide, fingerprint, job_gates, prunable
from streamflow_operator.render import (
    LABEL_PART_OF,
    PART_OF,
    Manifest,
    Meta,
    PublishedModel,
    checksum,
    render_all,
)
from streamflow_operator.render.airflow import airflow_namespace, secret_name
from streamflow_operator.render.flink import JOB_DEFS, build_flink_deployments, deployment_name
from streamflow_operator.render.model import (
    ANNOTATION_MODEL,
    ANNOTATION_MODEL_CHECKSUM,
    MAX_MODEL_BYTES,
    MODEL_KEY,
    model_config_map,
)
from streamflow_operator.render.postgres import app_secret_name
from streamflow_operator.runtime import PipelineKey, Store
from streamflow_operator.spec import GROUP, PLURAL, VERSION, FraudPipelineSpec, ModelSpec
from streamflow_operator.status import ModelInfo, Observation, build_status, normalized

log = logging.getLogger("streamflow.reconcile")
FINALIZER = f"{GROUP}/finalizer"
PIPELINES_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}/{{name}}"


class SpecError(ValueError):
    """The spec cannot be used (refused by a CEL rule, or by the models)."""


def parse_spec(spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> FraudPipelineSpec:
    """What the apiserver would accept (the CRD's CEL rules, evaluated locally) and the
    fraud-detector can read (the pydantic models), or a SpecError naming every problem."""
    from streamflow_operator.crd import ROOT_VALIDATIONS  # noqa: PLC0415

    problems = cel.violations(_spec_schema(), spec, "spec")
    if metadata is not None:
        root = {"type": "object", "x-kubernetes-validations": ROOT_VALIDATIONS}
        problems = cel.violations(root, {"metadata": metadata}) + problems
    try:
        parsed = FraudPipelineSpec.model_validate(spec)
    except ValidationError as exc:
        problems += [
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}".replace("spec.: ", "spec: ")
            for e in exc.errors()
        ]
    if problems:
        raise SpecError("; ".join(problems))
    return parsed


@functools.cache
def _spec_schema() -> dict[str, Any]:
    from streamflow_operator.crd import spec_schema  # noqa: PLC0415

    return spec_schema()


@dataclass(frozen=True)
class Verified:
    raw: bytes
    version: str
    checksum: str


@functools.cache
def builtin_model() -> Verified:
    """The model shipped in the package, verified once per process (it cannot change)."""
    raw = DEFAULT_MODEL_PATH.read_bytes()
    artifact = verify_artifact(raw, source="built-in model")
    return Verified(raw, artifact.model_version, artifact.checksum)


def verify_model(raw: bytes | None, source: str, expected_version: str | None) -> Verified:
    """Check a model artifact: present, under the size limit, checksum and structure valid, the
    version the spec pins. Raises ValueError with a one-line reason."""
    if raw is None:
        raise ValueError(f"{source}: no key {MODEL_KEY}")
    if len(raw) > MAX_MODEL_BYTES:
        raise ValueError(f"{source}: model is {len(raw)} bytes; the limit is {MAX_MODEL_BYTES}")
    try:
        artifact = verify_artifact(raw, source=source)
    except ModelArtifactError as exc:
        raise ValueError(str(exc)) from None
    if expected_version and artifact.model_version != expected_version:
        raise ValueError(
            f"{source}: model_version is {artifact.model_version}, "
            f"spec.model.version expects {expected_version}"
        )
    return Verified(raw, artifact.model_version, artifact.checksum)


def render_offline(text: str) -> str:
    """The children of a FraudPipeline file, as the first pass applies them (YAML)."""
    return render_with_notes(text)[0]


def render_with_notes(text: str) -> tuple[str, list[str]]:
    """`streamflow render`: (the children as the first pass applies them, notes on what is left
    out). Refuses exactly what the apiserver refuses."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "FraudPipeline":
        raise ValueError("expected a FraudPipeline resource (kind: FraudPipeline)")
    md = doc.get("metadata") or {}
    meta = Meta(name=md.get("name", "pipeline"), namespace=md.get("namespace", "default"))
    spec = parse_spec(doc.get("spec") or {}, {"name": meta.name})
    notes = [
        f"left out: Secret {airflow_namespace(spec, meta)}/{secret_name(spec, meta)} "
        "(the Airflow connection, built in the cluster from CloudNativePG's app secret "
        f"{app_secret_name(spec, meta)})",
    ]
    if spec.model.config_map_name is None:
        model = builtin_model()
        published = PublishedModel(
            model_config_map(meta, model.checksum), model.version, model.checksum, model.raw
        )
    else:
        published = PublishedModel(
            f"{meta.name}-model-<checksum>", spec.model.version or "<version>", "<checksum>"
        )
        notes.append(
            f"left out: ConfigMap {meta.namespace}/{meta.name}-model-<checksum> (the verified "
            f"copy of ConfigMap {meta.namespace}/{spec.model.config_map_name}, read in the "
            "cluster; the fraud-detector mounts it)"
        )
    meta = replace(meta, model=published)
    if spec.shadow is not None and spec.shadow.model is not None:
        if spec.shadow.model.config_map_name is None:
            meta = replace(meta, shadow_model=published)
        else:
            meta = replace(
                meta,
                shadow_model=PublishedModel(
                    f"{meta.name}-model-<shadow-checksum>",
                    spec.shadow.model.version or "<shadow-version>",
                    "<shadow-checksum>",
                ),
            )
            notes.append(
                f"left out: the verified copy of ConfigMap {meta.namespace}/"
                f"{spec.shadow.model.config_map_name} (the shadow model, read in the cluster)"
            )
    children = render_all(spec, meta)
    for child in children:  # the model payload is long: show its size, not its bytes
        data = child.get("data", {})
        if child["kind"] == "ConfigMap" and MODEL_KEY in data:
            data[MODEL_KEY] = f"<{len(data[MODEL_KEY])} bytes: {published.version}>"
    text = yaml.safe_dump_all(children, sort_keys=False, width=100)
    return text, notes


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Result:
    """What the worker does next with this pipeline."""

    requeue_after: float | None = None  # wait for something no watch reports
    failed: bool = False  # transient failure: back off and retry


@dataclass
class Reconciler:
    """One pass over one pipeline. Owns the cache (fed by handlers.py), the record of its own
    writes, and the verified models."""

    kube: Kube
    store: Store = field(default_factory=Store)
    pipelines: dict[PipelineKey, dict[str, Any]] = field(default_factory=dict)
    uids: dict[str, PipelineKey] = field(default_factory=dict)
    app_secrets: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, name) -> uri
    applied: dict[str, Applied] = field(default_factory=dict)
    models: dict[str, Verified] = field(default_factory=dict)  # by checksum, in use
    verified: dict[tuple[str, str], Verified | str] = field(default_factory=dict)  # (uid, rv)
    model_refs: dict[tuple[str, str], set[PipelineKey]] = field(default_factory=dict)
    secret_refs: dict[tuple[str, str], set[PipelineKey]] = field(default_factory=dict)
    deletion_timeout: float = 600.0
    specs: dict[tuple[str, int], FraudPipelineSpec | str] = field(default_factory=dict)
    written: dict[str, set[str]] = field(default_factory=dict)  # pipeline uid -> child keys
    model_in_use: dict[PipelineKey, str] = field(default_factory=dict)  # -> model checksum

    # ---- bookkeeping fed by the watches -------------------------------------------------
    def pipeline_changed(self, body: dict[str, Any]) -> bool:
        """Record a pipeline; True when something other than its status changed."""
        md = body["metadata"]
        key = (md["namespace"], md["name"])
        old = self.pipelines.get(key)
        if old is not None and _older(body, old):
            # The late echo of a version before one we hold (our own status or finalizer
            # write): taking it would turn the cached status back, and the next pass would
            # report a transition (an Event) that already happened.
            return False
        self.pipelines[key] = body
        self.uids[md["uid"]] = key
        spec = body.get("spec") or {}
        model = (spec.get("model") or {}).get("configMapName")
        shadow_model = ((spec.get("shadow") or {}).get("model") or {}).get("configMapName")
        pg = spec.get("postgres") or {}
        cluster = pg.get("clusterName") or f"{md['name']}-pg"
        self._refer(
            self.model_refs,
            key,
            (md["namespace"], model) if model else None,
            (md["namespace"], shadow_model) if shadow_model else None,
        )
        self._refer(self.secret_refs, key, (md["namespace"], f"{cluster}-app"))

        def essence(b: dict[str, Any] | None) -> Any:
            m = (b or {}).get("metadata") or {}
            return (
                m.get("generation"),
                m.get("labels"),
                m.get("annotations"),
                m.get("deletionTimestamp"),
                m.get("finalizers"),
            )

        return old is None or essence(old) != essence(body)

    @staticmethod
    def _refer(
        refs: dict[tuple[str, str], set[PipelineKey]],
        key: PipelineKey,
        *targets: tuple[str, str] | None,
    ) -> None:
        for holders in refs.values():
            holders.discard(key)
        for target in targets:
            if target is not None:
                refs.setdefault(target, set()).add(key)

    def pipeline_gone(self, key: PipelineKey) -> None:
        body = self.pipelines.pop(key, None)
        if body is not None:
            uid = body["metadata"]["uid"]
            self.uids.pop(uid, None)
            for k in self.written.pop(uid, set()):
                self.applied.pop(k, None)
            for cache_key in [k for k in self.specs if k[0] == uid]:
                del self.specs[cache_key]
        self.model_in_use.pop(key, None)
        in_use = set(self.model_in_use.values())
        self.models = {c: m for c, m in self.models.items() if c in in_use}
        self._refer(self.model_refs, key, None)
        self._refer(self.secret_refs, key, None)
        metrics.record_phase(f"{key[0]}/{key[1]}", None)
        metrics.record_model(key[0], key[1], None, None)

    def affected(self, obj: dict[str, Any]) -> set[PipelineKey]:
        """The pipelines a child's (or a referenced object's) event concerns."""
        md = obj.get("metadata") or {}
        found: set[PipelineKey] = set()
        owner = (md.get("labels") or {}).get("streamflow.dev/pipeline-uid")
        if owner and owner in self.uids:
            found.add(self.uids[owner])
        target = (md.get("namespace", ""), md.get("name", ""))
        if obj.get("kind") == "ConfigMap":
            found |= self.model_refs.get(target, set())
        if obj.get("kind") == "Secret":
            found |= self.secret_refs.get(target, set())
        return found

    # ---- one pass -------------------------------------------------------------------------
    async def reconcile(self, key: PipelineKey) -> Result:
        body = self.pipelines.get(key)
        if body is None:
            return Result()
        started = time.perf_counter()
        md = body["metadata"]
        try:
            if md.get("deletionTimestamp"):
                result = await self._finalize(body)
            else:
                if FINALIZER not in (md.get("finalizers") or []):
                    await self._set_finalizers(body, [*(md.get("finalizers") or []), FINALIZER])
                obs = await self._pass(body)
                result = await self._conclude(body, obs)
        except ApiError as exc:
            metrics.RECONCILIATIONS.labels(result="retry").inc()
            if exc.status:  # an unreachable apiserver is logged once by the client
                log.warning("%s/%s: %s", key[0], key[1], exc)
            return Result(failed=True)
        except Exception as exc:  # a bug: one line (the traceback at debug level), then retry
            metrics.RECONCILIATIONS.labels(result="error").inc()
            log.error("%s/%s: pass failed: %s: %s", key[0], key[1], type(exc).__name__, exc)
            log.debug("pass failed", exc_info=True)
            return Result(failed=True)
        metrics.DURATION.observe(time.perf_counter() - started)
        metrics.RECONCILIATIONS.labels(result="retry" if result.failed else "ok").inc()
        return result

    def _spec(self, body: dict[str, Any]) -> FraudPipelineSpec | str:
        md = body["metadata"]
        cache_key = (md["uid"], int(md.get("generation") or 0))
        if cache_key not in self.specs:
            try:
                self.specs[cache_key] = parse_spec(body.get("spec") or {})
            except SpecError as exc:
                self.specs[cache_key] = str(exc)
            for old in [k for k in self.specs if k[0] == md["uid"] and k != cache_key]:
                del self.specs[old]
        return self.specs[cache_key]

    async def _pass(self, body: dict[str, Any]) -> Observation:
        md = body["metadata"]
        meta = Meta(md["name"], md["namespace"], md["uid"])
        spec = self._spec(body)
        if isinstance(spec, str):  # nothing is applied: the children keep what they run
            return Observation(spec=None, model=ModelInfo(None), spec_error=spec)
        model = await self._model(spec, meta)
        shadow = None
        if spec.shadow is not None and spec.shadow.model is not None:
            shadow = await self._model(spec, meta, spec.shadow.model, volume="shadow-model")
        obs = Observation(spec=spec, model=model, shadow_model=shadow)
        uri = self.app_secrets.get((meta.namespace, app_secret_name(spec, meta)))
        meta = replace(
            meta,
            app_secret_uri=uri,
            model=model.deployed,
            shadow_model=shadow.deployed if shadow is not None else None,
        )

        planned = [m for m in render_all(spec, meta) if m["kind"] != "FlinkDeployment"]
        live: dict[str, Manifest] = {}
        # Children are independent of each other: written concurrently (status sorts them).
        for obj in await asyncio.gather(*(self._ensure(m, meta, obs) for m in planned)):
            if obj is not None:
                live[key_of(obj)] = obj
        from streamflow_operator.status import child_health  # noqa: PLC0415

        health = {k: child_health(o) for k, o in live.items()}
        for job in JOB_DEFS:
            k = f"FlinkDeployment/{meta.namespace}/{deployment_name(meta, job.name)}"
            if (fd := self.store.get(k)) is not None:
                live[k] = fd
        gates = job_gates(
            spec,
            meta,
            live,
            {k: h.ready for k, h in health.items()},
            {k: h.message for k, h in health.items()},
        )
        obs.held = {job: waits for job, waits in gates.items() if waits and not spec.suspend}
        meta = replace(meta, running=frozenset(j for j, w in gates.items() if not w))
        flink = build_flink_deployments(spec, meta)
        await asyncio.gather(*(self._ensure(m, meta, obs) for m in flink))
        await self._prune(spec, meta, planned + flink)
        return obs

    async def _model(
        self, spec: FraudPipelineSpec, meta: Meta, model_spec: ModelSpec | None = None,
        volume: str = "model",
    ) -> ModelInfo:  # fmt: skip
        """The model to mount (the live one, or with ``model_spec`` and ``volume`` the shadow
        challenger's): the source's if valid, else the last good one (what the running
        fraud-detector mounts on that volume), with the source's error."""
        model_spec = model_spec or spec.model
        name = model_spec.config_map_name
        error: str | None = None
        good: Verified | None = None
        if name is None:
            good = builtin_model()
        else:
            key = f"ConfigMap/{meta.namespace}/{name}"
            source = f"ConfigMap {meta.namespace}/{name}"
            cm = self.store.get(key)
            if cm is None:
                live = await self.kube.get(BY_KIND["ConfigMap"], meta.namespace, name)
                error = (
                    f"{source} not found"
                    if live is None
                    else f"{source} is not labelled {LABEL_PART_OF}={PART_OF}: the operator "
                    "watches only labelled ConfigMaps"
                )
            else:
                cm_md = cm["metadata"]
                cache_key = (cm_md["uid"], cm_md["resourceVersion"])
                if cache_key not in self.verified:
                    full = await self.kube.get(BY_KIND["ConfigMap"], meta.namespace, name)
                    self.verified = {k: v for k, v in self.verified.items() if k[0] != cm_md["uid"]}
                    self.verified[cache_key] = self._verify(full, source, model_spec.version)
                outcome = self.verified[cache_key]
                good = outcome if isinstance(outcome, Verified) else None
                error = outcome if isinstance(outcome, str) else None
        if good is not None:
            # Verified models are kept (by checksum) while a pipeline uses them.
            use = (meta.namespace, meta.name if volume == "model" else f"{meta.name}/{volume}")
            previous = self.model_in_use.get(use)
            self.model_in_use[use] = good.checksum
            self.models[good.checksum] = good
            if (
                previous
                and previous != good.checksum
                and previous not in set(self.model_in_use.values())
            ):
                self.models.pop(previous, None)
            published = PublishedModel(
                model_config_map(meta, good.checksum), good.version, good.checksum, good.raw
            )
            return ModelInfo(published)
        return ModelInfo(self._last_good_model(meta, volume), error)

    @staticmethod
    def _verify(cm: dict[str, Any] | None, source: str, version: str | None) -> Verified | str:
        if cm is None:
            return f"{source} not found"
        data = (cm.get("data") or {}).get(MODEL_KEY)
        binary = (cm.get("binaryData") or {}).get(MODEL_KEY)
        raw = data.encode() if data is not None else (base64.b64decode(binary) if binary else None)
        try:
            return verify_model(raw, source, version)
        except ValueError as exc:
            return str(exc)

    def _last_good_model(self, meta: Meta, volume: str = "model") -> PublishedModel | None:
        fd = self.store.get(
            f"FlinkDeployment/{meta.namespace}/{deployment_name(meta, 'fraud-detector')}"
        )
        by_volume = (fd or {}).get("mountsByVolume")
        names = [by_volume[volume]] if by_volume and volume in by_volume else []
        if by_volume is None and volume == "model":  # a child slimmed before mountsByVolume
            names = (fd or {}).get("mountsNow") or []
        for name in names:
            cm = self.store.get(f"ConfigMap/{meta.namespace}/{name}")
            annotations = ((cm or {}).get("metadata") or {}).get("annotations") or {}
            if cm is not None and ANNOTATION_MODEL_CHECKSUM in annotations:
                checksum_ = annotations[ANNOTATION_MODEL_CHECKSUM]
                known = self.models.get(checksum_)
                return PublishedModel(
                    name,
                    annotations.get(ANNOTATION_MODEL, ""),
                    checksum_,
                    known.raw if known else None,
                )
        return None

    async def _ensure(self, manifest: Manifest, meta: Meta, obs: Observation) -> Manifest | None:
        """Create, apply or keep one child; None when it is not (or not yet) there."""
        key = key_of(manifest)
        kind = BY_KIND[manifest["kind"]]
        live = self.store.get(key)
        decision = decide(manifest, live, self.applied.get(key), meta)
        if decision.action == "keep":
            obs.children.append(live or manifest)
            return live
        if decision.action == "conflict":
            obs.conflicts[key] = foreign_message(key, live)
            return None
        if decision.action == "wait":
            obs.children.append(live or manifest)
            return live
        try:
            if decision.action == "create":
                try:
                    result = await self.kube.create(kind, manifest)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    # Not in our cache: someone else's, or ours not seen yet (a restart).
                    existing = await self.kube.get(
                        kind, manifest["metadata"]["namespace"], manifest["metadata"]["name"]
                    )
                    if existing is None or not is_ours(existing, meta.uid, meta.namespace):
                        obs.conflicts[key] = foreign_message(key, existing)
                        return None
                    self.store.put(slim(existing))
                    result = await self._apply(kind, manifest, slim(existing))
            else:
                result = await self._apply(kind, manifest, live or {})
        except ApiError as exc:
            metrics.ERRORS.labels(kind=kind.kind).inc()
            if exc.status in (400, 404, 422):  # invalid, or the kind is not served
                obs.rejected[key] = exc.message
            else:
                obs.apply_errors[key] = str(exc)
            if exc.status:
                log.warning("%s: %s", describe(key), exc)
            return None
        obj = slim(result)
        self.store.put(obj)
        self.applied[key] = Applied(checksum(manifest), fingerprint(obj, manifest))
        self.written.setdefault(meta.uid, set()).add(key)
        if decision.repair:
            obs.repaired.append(key)
        obs.children.append(obj)
        return obj

    async def _apply(self, kind: Any, manifest: Manifest, live: Manifest) -> dict[str, Any]:
        if live.get("updateManaged"):
            await self._upgrade_managed_fields(kind, manifest)
        return await self.kube.apply(kind, manifest)

    async def _upgrade_managed_fields(self, kind: Any, manifest: Manifest) -> None:
        """A child we created with POST has its fields owned by our manager as an *Update*;
        server-side apply would then never remove a field we stop setting. Move them to our
        Apply entry, as client-go's csaupgrade (kubectl) does, guarded by resourceVersion."""
        md = manifest["metadata"]
        full = await self.kube.get(kind, md["namespace"], md["name"])
        if full is None:
            return
        entries = full["metadata"].get("managedFields") or []
        ours = [
            e for e in entries if e.get("manager") == FIELD_MANAGER and not e.get("subresource")
        ]
        if not any(e.get("operation") == "Update" for e in ours):
            return
        fields: dict[str, Any] = {}
        for e in ours:
            fields = _merge_fields(fields, e.get("fieldsV1") or {})
        merged = {
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": ours[0].get("apiVersion", kind.api_version),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
            "time": max(e.get("time", "") for e in ours) or None,
        }
        rest = [e for e in entries if e not in ours]
        await self.kube.patch(
            kind.path(md["namespace"], md["name"]),
            [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": full["metadata"]["resourceVersion"],
                },
                {"op": "replace", "path": "/metadata/managedFields", "value": [*rest, merged]},
            ],
            content_type=JSON_PATCH,
            kind=kind.kind,
        )

    async def _prune(self, spec: FraudPipelineSpec, meta: Meta, wanted: list[Manifest]) -> None:
        spared: set[str] = set()
        for obj in self.store.owned(meta.uid):
            if obj["kind"] == "FlinkDeployment":
                spared |= set(obj.get("mounts") or [])
        for obj in prunable(self.store.owned(meta.uid), {key_of(m) for m in wanted}, meta, spared):
            md = obj["metadata"]
            log.info("deleting %s: no longer part of the pipeline", describe(key_of(obj)))
            await self.kube.delete(BY_KIND[obj["kind"]], md["namespace"], md["name"], md["uid"])
            self.store.remove(key_of(obj))
            self.applied.pop(key_of(obj), None)

    # ---- status, events, finalizer --------------------------------------------------------
    async def _conclude(self, body: dict[str, Any], obs: Observation) -> Result:
        md = body["metadata"]
        old = body.get("status") or {}
        status, events = build_status(obs, old, int(md.get("generation") or 0))
        if status != normalized(old):
            written = await self.kube.patch(
                PIPELINES_PATH.format(ns=md["namespace"], name=md["name"]) + "/status",
                [{"op": "add", "path": "/status", "value": status}],
                content_type=JSON_PATCH,
                kind="FraudPipeline",
            )
            body["status"] = status  # our cache of the pipeline, until the watch echoes it
            version = ((written or {}).get("metadata") or {}).get("resourceVersion")
            if version:
                md["resourceVersion"] = version  # older echoes are ignored (pipeline_changed)
        for event_type, reason, message in events:
            await self.post_event(body, event_type, reason, message)
        metrics.record_phase(f"{md['namespace']}/{md['name']}", status.get("phase"))
        live = obs.model.deployed
        metrics.record_model(
            md["namespace"],
            md["name"],
            live.version if live else None,
            metrics.live_since(obs.children, live.config_map if live else None),
        )
        if obs.apply_errors:
            return Result(failed=True)
        if obs.conflicts or obs.model.error:  # objects no watch of ours reports
            return Result(requeue_after=30.0)
        return Result()

    async def post_event(
        self, body: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        md = body["metadata"]
        now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "FraudPipeline",
                "name": md["name"],
                "namespace": md["namespace"],
                "uid": md["uid"],
                "resourceVersion": md.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": _instance(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.request(
                "POST", f"/api/v1/namespaces/{md['namespace']}/events", body=event, kind="Event"
            )
        except ApiError as exc:  # an event is best effort: the status says it too
            log.warning(
                "event %s for %s/%s not posted: %s", reason, md["namespace"], md["name"], exc
            )
            return
        metrics.EVENTS.labels(type=event_type, reason=reason).inc()

    async def _set_finalizers(self, body: dict[str, Any], finalizers: list[str]) -> None:
        md = body["metadata"]
        result = await self.kube.patch(
            PIPELINES_PATH.format(ns=md["namespace"], name=md["name"]),
            {"metadata": {"finalizers": finalizers, "resourceVersion": md["resourceVersion"]}},
            kind="FraudPipeline",
        )
        body["metadata"] = {
            **md,
            **{k: result["metadata"].get(k) for k in ("finalizers", "resourceVersion")},
        }

    async def _finalize(self, body: dict[str, Any]) -> Result:
        """Delete every child proven ours (each by uid), wait for them to go, then release the
        pipeline; a child held by someone else's finalizer is reported, up to a bound."""
        md = body["metadata"]
        if FINALIZER not in (md.get("finalizers") or []):
            return Result()
        meta = Meta(md["name"], md["namespace"], md["uid"])
        secrets = await self.kube.list(
            BY_KIND["Secret"], f"{WATCH_SELECTOR},streamflow.dev/pipeline-uid={md['uid']}"
        )
        for s in secrets:
            self.store.put(slim(s))
        remaining: list[Manifest] = []
        for child in self.store.owned(meta.uid):
            obj = child
            if not is_ours(obj, meta.uid, meta.namespace):
                continue
            omd = obj["metadata"]
            if not omd.get("deletionTimestamp"):
                result = await self.kube.delete(
                    BY_KIND[obj["kind"]], omd["namespace"], omd["name"], omd["uid"]
                )
                rmd = (result or {}).get("metadata") or {} if isinstance(result, dict) else {}
                if not (rmd.get("deletionTimestamp") and rmd.get("finalizers")):
                    self.store.remove(key_of(obj))  # gone at once: nothing holds it
                    continue
                obj = slim({**result, "kind": obj["kind"], "apiVersion": obj["apiVersion"]})
                self.store.put(obj)
            remaining.append(obj)
        if not remaining:
            await self._set_finalizers(body, [f for f in md["finalizers"] if f != FINALIZER])
            return Result()
        waiting = [
            f"{describe(key_of(o))} (finalizers: "
            f"{', '.join(o['metadata'].get('finalizers') or []) or 'none'})"
            for o in remaining
        ]
        started = datetime.fromisoformat(md["deletionTimestamp"].replace("Z", "+00:00"))
        waited = (_now() - started).total_seconds()
        obs = Observation(spec=None, model=ModelInfo(None), deleting=waiting)
        spec = self._spec(body)
        if not isinstance(spec, str):
            obs.spec = spec
        if waited >= self.deletion_timeout:
            obs.left_behind = [key_of(o) for o in remaining]
            log.warning(
                "%s/%s: deletion bound (%.0fs) passed; leaving %s",
                md["namespace"],
                md["name"],
                self.deletion_timeout,
                ", ".join(waiting),
            )
            for key in obs.left_behind:
                await self.post_event(
                    body,
                    "Warning",
                    "LeftBehind",
                    f"{describe(key)} was still being deleted when the deletion bound "
                    f"({self.deletion_timeout:.0f}s) passed",
                )
            await self._set_finalizers(body, [f for f in md["finalizers"] if f != FINALIZER])
            return Result()
        if obs.spec is not None:
            await self._conclude(body, obs)
        return Result(requeue_after=min(5.0, self.deletion_timeout - waited + 0.5))

    # ---- safety net -----------------------------------------------------------------------
    async def list_secrets(self) -> None:
        """Our Airflow connection Secrets are not watched (kopf's Secret stream carries CNPG's
        app secrets): one cluster-wide list per resync round refreshes them."""
        secrets = await self.kube.list(BY_KIND["Secret"], WATCH_SELECTOR)
        self.store.replace_kind("Secret", (slim(s) for s in secrets))


def _merge_fields(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_fields(out[k], v) if isinstance(out.get(k), dict) else v
    return out


@functools.cache
def _instance() -> str:
    import socket  # noqa: PLC0415

    return socket.gethostname()


def _older(body: dict[str, Any], than: dict[str, Any]) -> bool:
    """Whether ``body`` is an older version of the same object than ``than``. etcd's resource
    versions increase with every write; one that is not a number (another storage) is never
    called older, so nothing is ever dropped on a guess."""
    new = (body.get("metadata") or {}).get("resourceVersion")
    held = (than.get("metadata") or {}).get("resourceVersion")
    if not (isinstance(new, str) and isinstance(held, str) and new.isdigit() and held.isdigit()):
        return False
    same = (body["metadata"].get("uid") or "") == (than["metadata"].get("uid") or "")
    return same and int(new) < int(held)
