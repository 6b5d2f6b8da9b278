"""JSON Schema files of the event contracts, exported from the pydantic models (one source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from streamflow_jobs.events import CONTRACTS

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


def json_schema(name: str) -> dict[str, Any]:
    schema = CONTRACTS[name].model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://streamflow.dev/schemas/{name}.json"
    return schema


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in CONTRACTS:
        path = directory / f"{name}.schema.json"
        path.write_bytes(
            orjson.dumps(json_schema(name), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
            + b"\n"
        )
        paths.append(path)
    return paths
