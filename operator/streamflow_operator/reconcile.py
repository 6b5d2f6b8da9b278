"""Reconcile one FraudPipeline: observe -> render (pure) -> server-side apply -> read health.

Every pass applies every child with server-side apply under our field manager, so a child edited
by hand is put back (only the fields we own; labels others added are kept) and a deleted child is
recreated. Children that carry our pipeline label but are no longer rendered (a disabled job, an
old migrations Job) are deleted. Nothing here writes the FraudPipeline itself: the result is a
:class:`Observation` that status.py turns into conditions, and handlers.py patches once.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import yaml
from pydantic import ValidationError

from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH, ModelArtifactError, verify_artifact
from streamflow_operator.render import LABEL_PIPELINE, Manifest, Meta, render_all
from streamflow_operator.render.airflow import airflow_namespace
from streamflow_operator.render.kafka import kafka_namespace
from streamflow_operator.render.model import MAX_MODEL_BYTES
from streamflow_operator.render.postgres import app_secret_name
from streamflow_operator.spec import FraudPipelineSpec

FIELD_MANAGER = "streamflow-operator"
_FLINK = ("flink.apache.org/v1beta1", "FlinkDeployment")
log = logging.getLogger("streamflow.reconcile")

# Kinds we create, by component, for pruning and health reads.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "Database"),
    ("batch/v1", "Job"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("flink.apache.org/v1beta1", "FlinkDeployment"),
)


class SpecError(ValueError):
    """The spec cannot be rendered (the CRD's schema let it through, the models did not)."""


def parse_spec(spec: dict[str, Any]) -> FraudPipelineSpec:
    try:
        return FraudPipelineSpec.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(problems) from exc


@dataclass
class ModelInfo:
    json: bytes | None
    version: str | None
    checksum: str | None
    error: str | None = None  # a permanent problem with the model (stalls the pipeline)


@functools.cache
def builtin_model() -> ModelInfo:
    """The model shipped in the package, verified once per process (it cannot change)."""
    raw = DEFAULT_MODEL_PATH.read_bytes()
    artifact = verify_artifact(raw, source="built-in model")
    return ModelInfo(raw, artifact.model_version, artifact.checksum)


def verify_model(raw: bytes | None, source: str, expected_version: str | None) -> ModelInfo:
    """Check a model artifact: present, under the size limit, checksum and structure valid."""
    if raw is None:
        return ModelInfo(None, None, None, f"{source}: no key model.json")
    if len(raw) > MAX_MODEL_BYTES:
        return ModelInfo(
            None, None, None, f"{source}: model is {len(raw)} bytes; the limit is {MAX_MODEL_BYTES}"
        )
    try:
        artifact = verify_artifact(raw, source=source)
    except ModelArtifactError as exc:
        return ModelInfo(None, None, None, str(exc))
    if expected_version and artifact.model_version != expected_version:
        return ModelInfo(
            None,
            artifact.model_version,
            artifact.checksum,
            f"{source}: model_version is {artifact.model_version}, "
            f"spec.model.version expects {expected_version}",
        )
    return ModelInfo(raw, artifact.model_version, artifact.checksum)


def render_offline(text: str) -> str:
    """`streamflow render`: the children of a FraudPipeline file, as the first pass applies them."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "FraudPipeline":
        raise ValueError("expected a FraudPipeline resource (kind: FraudPipeline)")
    spec = parse_spec(doc.get("spec") or {})
    md = doc.get("metadata") or {}
    model = (
        builtin_model()
        if spec.model.config_map_name is None
        else ModelInfo(None, spec.model.version, None)
    )
    meta = Meta(
        name=md.get("name", "pipeline"),
        namespace=md.get("namespace", "default"),
        model_json=model.json,
        model_version=model.version,
    )
    children = render_all(spec, meta)
    for child in children:  # the model payload is long: show its size, not its bytes
        data = child.get("data", {})
        if child["kind"] == "ConfigMap" and "model.json" in data:
            data["model.json"] = f"<{len(data['model.json'])} bytes: {model.version}>"
    return yaml.safe_dump_all(children, sort_keys=False, width=100)


@dataclass
class Observation:
    """What one pass saw and did: the input of status.py."""

    spec: FraudPipelineSpec
    model: ModelInfo
    children: list[Manifest] = field(default_factory=list)  # live objects after apply
    apply_errors: dict[str, str] = field(default_factory=dict)  # "Kind/ns/name" -> message
    permanent_errors: dict[str, str] = field(default_factory=dict)
    dependencies_ready: bool = False
    waiting_for: list[str] = field(default_factory=list)


def child_key(obj: Manifest) -> str:
    md = obj["metadata"]
    return f"{obj['kind']}/{md.get('namespace', '')}/{md['name']}"


class Reconciler:
    """Applies and reads children through the Kubernetes dynamic client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes.dynamic import DynamicClient  # noqa: PLC0415

        self.dynamic = DynamicClient(api_client)
        self._resources: dict[tuple[str, str], Any] = {}
        # child key -> (checksum of the manifest we applied, resourceVersion it produced)
        self._applied: dict[str, tuple[str, str | None]] = {}

    def resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> Manifest | None:
        from kubernetes.dynamic.exceptions import NotFoundError  # noqa: PLC0415

        try:
            obj = self.resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return None
        result: Manifest = obj.to_dict()
        return result

    def apply(self, manifest: Manifest) -> Manifest:
        md = manifest["metadata"]
        obj = self.resource(manifest["apiVersion"], manifest["kind"]).server_side_apply(
            body=manifest,
            name=md["name"],
            namespace=md.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        result: Manifest = obj.to_dict()
        return result

    def owned(self, pipeline_label: str, namespaces: set[str]) -> list[Manifest]:
        """Everything carrying our pipeline label, in the namespaces children may live in."""
        found = []
        for api_version, kind in CHILD_KINDS:
            for ns in sorted(namespaces):
                try:
                    items = self.resource(api_version, kind).get(
                        namespace=ns, label_selector=f"{LABEL_PIPELINE}={pipeline_label}"
                    )
                except Exception as exc:
                    log.debug("cannot list %s in %s: %s", kind, ns, exc)
                    continue
                found += [i.to_dict() for i in items.items]
        return found

    def delete(self, obj: Manifest) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError  # noqa: PLC0415

        md = obj["metadata"]
        with contextlib.suppress(NotFoundError):
            self.resource(obj["apiVersion"], obj["kind"]).delete(
                name=md["name"],
                namespace=md.get("namespace"),
                body={"propagationPolicy": "Background"},
            )

    # ---- one pass --------------------------------------------------------------------------
    def observe_model(self, spec: FraudPipelineSpec, namespace: str) -> ModelInfo:
        name = spec.model.config_map_name
        if name is None:
            return builtin_model()
        cm = self.get("v1", "ConfigMap", name, namespace)
        if cm is None:
            return ModelInfo(None, None, None, f"ConfigMap {namespace}/{name} not found")
        data = (cm.get("data") or {}).get("model.json")
        binary = (cm.get("binaryData") or {}).get("model.json")
        raw = (
            data.encode()
            if data is not None
            else (base64.b64decode(binary) if binary is not None else None)
        )
        return verify_model(raw, f"ConfigMap {namespace}/{name}", spec.model.version)

    def reconcile(
        self, body: dict[str, Any], prune: bool = True, cache: dict[str, Manifest] | None = None
    ) -> Observation:
        """One pass. ``cache`` holds the live children as the operator's watches see them (kopf
        indexes, like controller-runtime's informer cache): a child is applied only when it is
        missing, its rendered manifest changed, or it changed since our last apply (drift, or a
        status update); otherwise its cached copy is read. Without a cache every child is
        applied and read back from the apply response. Listing for leftovers to prune
        (``prune``) is done on spec events, not on every resync."""
        from streamflow_operator.render.flink import (  # noqa: PLC0415
            JOBS,
            build_flink_deployments,
            deployment_name,
        )
        from streamflow_operator.status import dependencies_ready  # noqa: PLC0415

        md = body["metadata"]
        name, namespace = md["name"], md["namespace"]
        spec = parse_spec(body.get("spec") or {})
        model = self.observe_model(spec, namespace)
        obs = Observation(spec=spec, model=model)
        secret = self.get("v1", "Secret", app_secret_name(spec, Meta(name, namespace)), namespace)
        uri = None
        if secret is not None and "uri" in (secret.get("data") or {}):
            uri = base64.b64decode(secret["data"]["uri"]).decode()
        meta = Meta(
            name=name,
            namespace=namespace,
            uid=md.get("uid", ""),
            app_secret_uri=uri,
            model_json=model.json,
            model_version=model.version,
        )

        # Everything but the Flink jobs first; their health decides whether the jobs may run.
        planned = [m for m in render_all(spec, meta) if m["kind"] != "FlinkDeployment"]
        live = {
            child_key(m): obj for m in planned if (obj := self._apply(m, obs, cache)) is not None
        }
        ready, obs.waiting_for = dependencies_ready(planned, live)
        # Once started, a job keeps running through a transient hiccup of a dependency.
        started = ready or any(
            (self._live(_FLINK, deployment_name(meta, job), namespace, cache) or {})
            .get("spec", {})
            .get("job", {})
            .get("state")
            == "running"
            for job in JOBS
        )
        obs.dependencies_ready = started and model.error is None
        flink = build_flink_deployments(
            spec, replace(meta, dependencies_ready=obs.dependencies_ready)
        )
        for manifest in flink:
            self._apply(manifest, obs, cache)
        if prune:
            wanted = {child_key(m) for m in planned + flink}
            for obj in self.owned(meta.pipeline_label, self._namespaces(spec, meta)):
                if child_key(obj) not in wanted:
                    log.info("deleting %s: no longer part of the pipeline", child_key(obj))
                    self.delete(obj)
        return obs

    def _live(
        self,
        kind: tuple[str, str],
        name: str,
        namespace: str,
        cache: dict[str, Manifest] | None,
    ) -> Manifest | None:
        """A child as the watch cache has it, or from the apiserver when there is no cache."""
        if cache is not None:
            return cache.get(f"{kind[1]}/{namespace}/{name}")
        return self.get(*kind, name, namespace)

    def _apply(
        self, manifest: Manifest, obs: Observation, cache: dict[str, Manifest] | None = None
    ) -> Manifest | None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        from streamflow_operator.render import checksum  # noqa: PLC0415

        key = child_key(manifest)
        rendered = checksum(manifest)
        cached = cache.get(key) if cache is not None else None
        if cached is not None and self._applied.get(key) == (
            rendered,
            cached["metadata"].get("resourceVersion"),
        ):
            obs.children.append(cached)  # unchanged since our apply: nothing to correct
            return cached
        try:
            live = self.apply(manifest)
        except ApiException as exc:
            message = _api_message(exc)
            obs.apply_errors[key] = message
            if exc.status in (400, 404, 422):  # invalid or kind not served: retrying won't help
                obs.permanent_errors[key] = message
            log.warning("apply %s failed: %s", key, message)
            return None
        self._applied[key] = (rendered, live["metadata"].get("resourceVersion"))
        obs.children.append(live)
        return live

    def _namespaces(self, spec: FraudPipelineSpec, meta: Meta) -> set[str]:
        return {meta.namespace, kafka_namespace(spec, meta), airflow_namespace(spec, meta)}

    def delete_cross_namespace(self, body: dict[str, Any]) -> list[str]:
        """The finalizer's work: children outside the pipeline's namespace (no ownerReference)."""
        md = body["metadata"]
        meta = Meta(md["name"], md["namespace"])
        try:
            spec = parse_spec(body.get("spec") or {})
            namespaces = self._namespaces(spec, meta)
        except SpecError:
            namespaces = {meta.namespace}
        deleted = []
        for obj in self.owned(meta.pipeline_label, namespaces):
            if obj["metadata"].get("namespace") != meta.namespace:
                self.delete(obj)
                deleted.append(child_key(obj))
        return deleted


def _api_message(exc: Any) -> str:
    try:
        import json  # noqa: PLC0415

        return str(json.loads(exc.body).get("message") or exc.reason)
    except (ValueError, TypeError, AttributeError):
        return f"{exc.status} {exc.reason}"
