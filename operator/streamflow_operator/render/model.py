"""The rules and model ConfigMaps mounted into the fraud-detector.

Both are content-addressed and immutable (``<pipeline>-rules-<hash>``, ``<pipeline>-model-<hash>``):
a FlinkDeployment's pod template names exactly the rules and model it was deployed with, so a
restarted pod never reads a newer (or broken) input than its job, a Flink rollback finds the old
one, and a change is a new name, hence a new pod template, hence a savepoint upgrade.
"""

from __future__ import annotations

from streamflow_operator.render import Manifest, Meta, checksum, metadata
from streamflow_operator.spec import FraudPipelineSpec

# The apiserver's object limit is ~1.5 MiB; a model bigger than this is refused with a clear
# status message instead of failing the apply.
MAX_MODEL_BYTES = 1024 * 1024
ANNOTATION_RULES = "streamflow.dev/rules-checksum"
ANNOTATION_MODEL = "streamflow.dev/model-version"
ANNOTATION_MODEL_CHECKSUM = "streamflow.dev/model-checksum"
RULES_KEY = "rules.yaml"
MODEL_KEY = "model.json"


def rules_checksum(spec: FraudPipelineSpec) -> str:
    return checksum(spec.rules.model_dump(mode="json"))


def rules_config_map(spec: FraudPipelineSpec, meta: Meta) -> str:
    return f"{meta.name}-rules-{rules_checksum(spec)[:10]}"


def shadow_parts(spec: FraudPipelineSpec, meta: Meta) -> tuple[bool, bool]:
    """What the shadow challenger brings of its own: (rules, model). A shadow model that was
    never valid is left out (the status says why); with nothing of its own, no shadow runs."""
    if spec.shadow is None:
        return False, False
    return spec.shadow.rules is not None, (
        spec.shadow.model is not None and meta.shadow_model is not None
    )


def shadow_rules_checksum(spec: FraudPipelineSpec) -> str:
    rules = spec.shadow_rules()
    assert rules is not None
    return checksum(rules.model_dump(mode="json"))


def shadow_rules_config_map(spec: FraudPipelineSpec, meta: Meta) -> str:
    return f"{meta.name}-shadow-rules-{shadow_rules_checksum(spec)[:10]}"


def model_config_map(meta: Meta, model_checksum: str) -> str:
    """Our published copy of a verified model: named by its checksum (``sha256:<hex>``)."""
    return f"{meta.name}-model-{model_checksum.rsplit(':', 1)[-1][:10]}"


def build_config_maps(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    out: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(
                meta,
                rules_config_map(spec, meta),
                meta.namespace,
                "rules",
                {ANNOTATION_RULES: rules_checksum(spec)},
            ),
            "immutable": True,
            "data": {RULES_KEY: spec.rules.to_yaml()},
        }
    ]
    shadow_rules, shadow_model = shadow_parts(spec, meta)
    if shadow_rules:
        rules = spec.shadow_rules()
        assert rules is not None
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(
                    meta,
                    shadow_rules_config_map(spec, meta),
                    meta.namespace,
                    "shadow-rules",
                    {ANNOTATION_RULES: shadow_rules_checksum(spec)},
                ),
                "immutable": True,
                "data": {RULES_KEY: rules.to_yaml()},
            }
        )
    models = [meta.model, meta.shadow_model if shadow_model else None]
    published: set[str] = set()
    for model in models:
        # The same artifact live and in shadow is one ConfigMap (content-addressed).
        if model is None or model.json is None or model.config_map in published:
            continue
        published.add(model.config_map)
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(
                    meta,
                    model.config_map,
                    meta.namespace,
                    "model",
                    {
                        ANNOTATION_MODEL: model.version,
                        ANNOTATION_MODEL_CHECKSUM: model.checksum,
                    },
                ),
                "immutable": True,
                "data": {MODEL_KEY: model.json.decode("utf-8")},
            }
        )
    return out
