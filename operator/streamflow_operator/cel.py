"""The CRD's CEL rules evaluated locally, so ``streamflow render`` and the operator refuse exactly
what the apiserver refuses: one implementation of each rule (the expression in spec.py).

The apiserver evaluates ``x-kubernetes-validations`` on every object node that is present, after
applying the schema's defaults; this walks the generated schema the same way (cel-python).
"""

from __future__ import annotations

import functools
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

_ENV = celpy.Environment()


@functools.cache
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def _defaulted(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the apiserver stores it."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [_defaulted(schema["items"], v) for v in value]
        return value
    out = dict(value)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in out and "default" in prop:
            out[name] = prop["default"]
        if name in out:
            out[name] = _defaulted(prop, out[name])
    return out


def violations(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Messages of the CEL rules ``value`` breaks, each prefixed with the field's path the way
    the apiserver words it (``spec.flink: Invalid value: "object": <message>``)."""
    value = _defaulted(schema, value)
    return _walk(schema, value, path)


def _walk(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for rule in schema.get("x-kubernetes-validations") or []:
            try:
                result = _program(rule["rule"]).evaluate({"self": json_to_cel(value)})
            except CELEvalError:  # the apiserver refuses on an evaluation error too
                result = False
            if isinstance(result, Exception) or not bool(result):
                where = path or "<root>"
                found.append(f'{where}: Invalid value: "object": {rule["message"]}')
        for name, prop in (schema.get("properties") or {}).items():
            if name in value:
                found += _walk(prop, value[name], f"{path}.{name}" if path else name)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _walk(schema["items"], item, f"{path}[{i}]")
    return found
