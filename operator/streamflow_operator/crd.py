"""The FraudPipeline CRD, generated from spec.py (``streamflow crd`` writes crds/; a test fails when
the committed file drifts).

pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3.0 schema: no $ref, no
anyOf-with-null (an optional field is simply not required), boolean exclusive bounds, no
``additionalProperties: false`` (unknown fields are pruned, or refused by ``kubectl --validate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamflow_operator.spec import (
    GROUP,
    KIND,
    MAX_BLACKLIST_ID_LENGTH,
    MAX_INLINE_BLACKLIST,
    MAX_NAME_LENGTH,
    PLURAL,
    RULES_FIELD_HELP,
    VERSION,
    FraudPipelineSpec,
    FraudPipelineStatus,
)

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{PLURAL}.{GROUP}.yaml"
# Helm installs the files in a chart's crds/ before its templates: the same CRD ships there.
CHART_CRD_PATH = CRD_PATH.parents[1] / "chart" / "streamflow-operator" / "crds" / CRD_PATH.name
_DROP = {"title", "additionalProperties", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **rest}, defs)
        node = {**rest, "anyOf": options}
    out: dict[str, Any] = {}
    for key, value in node.items():
        # Object defaults are left to the operator (pydantic applies them); scalar defaults stay in
        # the schema so the apiserver fills them in and `kubectl get -o yaml` shows them.
        if key in _DROP or (key == "default" and (value is None or isinstance(value, dict))):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _structural(v, defs) for name, v in value.items()}
        else:
            out[key] = _structural(value, defs)
    return out


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return schema


def _describe_rules(node: dict[str, Any]) -> None:
    """RulesConfig is the detector's model: fill in the descriptions it lacks, bound the inline
    blacklist (what only the resource needs)."""
    for name, prop in (node.get("properties") or {}).items():
        if not prop.get("description") and name in RULES_FIELD_HELP:
            prop["description"] = RULES_FIELD_HELP[name]
        _describe_rules(prop)
    blacklist = (node.get("properties") or {}).get("blacklist")
    if blacklist:
        for name in ("customers", "stores"):
            field = blacklist["properties"][name]
            field["maxItems"] = min(
                field.get("maxItems", MAX_INLINE_BLACKLIST), MAX_INLINE_BLACKLIST
            )
            field["items"] = {**field["items"], "maxLength": MAX_BLACKLIST_ID_LENGTH}


def spec_schema() -> dict[str, Any]:
    """The spec's structural schema, as the CRD carries it."""
    spec = openapi_schema(FraudPipelineSpec)
    _describe_rules(spec["properties"]["rules"])
    _describe_rules(spec["properties"]["shadow"]["properties"]["rules"])
    return spec


# Validated at the root (only metadata.name is visible to CEL there).
ROOT_VALIDATIONS = [
    {
        "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
        "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters (children's names "
        "and Flink's Services are derived from it)",
    }
]


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


def build_crd() -> dict[str, Any]:
    spec = spec_schema()
    status = openapi_schema(FraudPipelineStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "streamflow"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["fp"],
                "categories": ["streamflow"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _column("Phase", ".status.phase"),
                        _column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
                        _column("Topics", ".status.topicsReady"),
                        _column("Jobs", ".status.jobsRunning"),
                        _column("Model", ".status.modelVersion"),
                        _column("Age", ".metadata.creationTimestamp", "date"),
                        _column(
                            "Message", '.status.conditions[?(@.type=="Ready")].message', priority=1
                        ),
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "FraudPipeline declares Kafka topics, Flink jobs, a "
                            "PostgreSQL warehouse, Airflow connections and the fraud model.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "required": ["spec"],
                            "x-kubernetes-validations": ROOT_VALIDATIONS,
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = (
        "# Generated from operator/streamflow_operator/spec.py by `streamflow crd`. Do not edit.\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def write_crd(path: Path = CRD_PATH) -> Path:
    """Written under a temporary name, then renamed: never a half-written CRD."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(crd_yaml(), encoding="utf-8")
    tmp.replace(path)
    return path


REFERENCE_PATH = CRD_PATH.parents[1] / "docs" / "reference" / "fraudpipeline.md"
_BOUNDS = (
    ("minimum", ">= {}"),
    ("maximum", "<= {}"),
    ("minLength", "length >= {}"),
    ("maxLength", "length <= {}"),
    ("minItems", ">= {} items"),
    ("maxItems", "<= {} items"),
    ("pattern", "matches `{}`"),
)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _object_defaults(node: Any, defs: dict[str, Any], path: str, out: dict[str, Any]) -> None:
    """Path -> the default of each object field, from pydantic's schema (the CRD leaves them
    to the operator, so they are not in its schema)."""
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **extra}
    for option in node.get("anyOf", []):
        _object_defaults({**option, "default": node.get("default")}, defs, path, out)
    if isinstance(node.get("default"), dict):
        out[path] = node["default"]
    for name, child in (node.get("properties") or {}).items():
        _object_defaults(child, defs, f"{path}.{name}", out)


def _rows(
    node: dict[str, Any], path: str, required: bool, inherited: Any = None,
    objects: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """One table row per field; ``inherited`` is the default the enclosing object's own default
    gives this field (the effective default when the parent is omitted)."""
    objects = objects or {}
    if inherited is None:
        inherited = objects.get(path)
    kind = node.get("type", "object")
    if kind == "array":
        kind = f"array of {node.get('items', {}).get('type', 'object')}"
    bounds = [fmt.format(node[key]) for key, fmt in _BOUNDS if key in node]
    if "enum" in node:
        bounds.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for rule in node.get("x-kubernetes-validations", []):
        bounds.append(rule["message"])
    default = inherited if inherited is not None else node.get("default")
    shown = "" if default is None or isinstance(default, dict) else f"`{default}`"
    out = [
        f"| `{path}` | {kind}{' (required)' if required else ''} | {shown} | "
        f"{_cell('; '.join(bounds))} | {_cell(node.get('description', ''))} |"
    ]
    needed = set(node.get("required", []))
    defaults = default if isinstance(default, dict) else {}
    for name, child in (node.get("properties") or {}).items():
        out += _rows(child, f"{path}.{name}", name in needed, defaults.get(name), objects)
    return out


def reference_markdown() -> str:
    """docs/reference/fraudpipeline.md: every field of the resource, from the CRD's schema."""
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    lines = [
        "<!-- Generated from operator/streamflow_operator/spec.py by `streamflow crd`. -->",
        f"# {KIND} reference ({GROUP}/{version['name']})",
        "",
        "Every field of the resource: type, default, bounds (including the CEL rules the",
        "apiserver enforces) and description. `kubectl explain fraudpipeline.spec` shows the same.",
        "",
    ]
    objects: dict[str, Any] = {}
    for part, model in (("spec", FraudPipelineSpec), ("status", FraudPipelineStatus)):
        raw = model.model_json_schema(by_alias=True, mode="validation")
        _object_defaults(raw, raw.get("$defs", {}), part, objects)
    for part in ("spec", "status"):
        lines += [
            f"## {part}",
            "",
            "| field | type | default | bounds | description |",
            "| --- | --- | --- | --- | --- |",
            *_rows(root["properties"][part], part, False, None, objects),
            "",
        ]
    return "\n".join(lines)


def write_reference(path: Path = REFERENCE_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(reference_markdown(), encoding="utf-8")
    tmp.replace(path)
    return path
