"""Repeated keys in a JSON object: found in one pass over the bytes, proved by a second parse.

JSON decoders keep the last of a repeated key, so ``{"amount": 1, ..., "amount": 99999}`` would
be read as 99999 by us and as 1 by a system that keeps the first: such an object is refused.
:func:`top_level_repeats` is the C scan in ``_jsonkeys.c`` (built by ``make compile``; a few
instructions a byte, where a second parse costs ~3 us an event); without the build it is the
exact check itself, slower but the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def repeated_key(raw: bytes) -> str | None:
    """The first key that a JSON object (at any depth) names twice, or None. ``raw`` is a
    valid JSON document (decoded by msgspec already)."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> None:
        names = [name for name, _ in items]
        if not repeated and len(set(names)) != len(names):
            repeated.append(next(n for n in names if names.count(n) > 1))

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except ValueError:  # json's stricter corners (e.g. huge exponents) do not matter here
        return None
    return repeated[0] if repeated else None


def _exact(raw: bytes) -> int:
    return 0 if repeated_key(raw) is None else 1


top_level_repeats: Callable[[bytes], int]
try:
    from streamflow_jobs._jsonkeys import top_level_repeats
except ImportError:  # not built (`make clean`): the exact check on every event
    top_level_repeats = _exact
