"""The rules and model ConfigMaps mounted into the fraud-detector."""

from __future__ import annotations

from streamflow_operator.render import Manifest, Meta, checksum, metadata
from streamflow_operator.spec import FraudPipelineSpec

# The apiserver's object limit is ~1.5 MiB; a model bigger than this is refused with a clear
# status message instead of failing the apply.
MAX_MODEL_BYTES = 1024 * 1024
ANNOTATION_RULES = "streamflow.dev/rules-checksum"
ANNOTATION_MODEL = "streamflow.dev/model-version"


def rules_config_map(meta: Meta) -> str:
    return f"{meta.name}-rules"


def model_config_map(spec: FraudPipelineSpec, meta: Meta) -> str:
    return spec.model.config_map_name or f"{meta.name}-model"


def rules_yaml(spec: FraudPipelineSpec) -> str:
    return spec.rules.to_yaml()


def rules_checksum(spec: FraudPipelineSpec) -> str:
    return checksum(spec.rules.model_dump(mode="json"))


def build_config_maps(spec: FraudPipelineSpec, meta: Meta) -> list[Manifest]:
    out: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(
                meta,
                rules_config_map(meta),
                meta.namespace,
                "rules",
                {ANNOTATION_RULES: rules_checksum(spec)},
            ),
            "data": {"rules.yaml": rules_yaml(spec)},
        }
    ]
    # A referenced model ConfigMap is the user's: mounted as it is, never written by us.
    if spec.model.config_map_name is None and meta.model_json is not None:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(
                    meta,
                    model_config_map(spec, meta),
                    meta.namespace,
                    "model",
                    {ANNOTATION_MODEL: meta.model_version or ""},
                ),
                "data": {"model.json": meta.model_json.decode("utf-8")},
            }
        )
    return out
