"""JSON Schema files of the event contracts, exported from the pydantic models (one source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson

from streamflow_jobs.events import CONTRACTS

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


# The transaction amount is read from a JSON number or a numeric string (see events.Transaction);
# msgspec would describe a Decimal as a string only.
_AMOUNT_IN = {
    "description": "Positive, at most 2 decimals and 12 digits; JSON number or numeric string",
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10_000_000_000},
        {"type": "string", "pattern": r"^(?!0+(\.0+)?$)\d{1,10}(\.\d{1,2})?$"},
    ],
}


def json_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(CONTRACTS[name])
    for definition in schema.get("$defs", {}).values():
        if definition.get("title", "").startswith("Transaction"):
            props = definition["properties"]
            props["amount"] = _AMOUNT_IN
            # Enforced in Transaction.__post_init__ (cheaper than msgspec's per-field regex).
            props["currency"]["pattern"] = "^[A-Z]{3}$"
            for field in ("transaction_id", "customer_id", "store_id"):
                props[field]["pattern"] = r"\S"
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
