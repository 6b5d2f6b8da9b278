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
    if meta.model is not None and meta.model.json is not None:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(
                    meta,
                    meta.model.config_map,
                    meta.namespace,
                    "model",
                    {
                        ANNOTATION_MODEL: meta.model.version,
                        ANNOTATION_MODEL_CHECKSUM: meta.model.checksum,
                    },
                ),
                "immutable": True,
                "data": {MODEL_KEY: meta.model.json.decode("utf-8")},
            }
        )
    return out
