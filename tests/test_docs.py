"""The documentation's indexes stay complete."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ADR = Path(__file__).resolve().parents[1] / "docs" / "adr"


def test_every_decision_record_is_in_the_index() -> None:
    index = (ADR / "README.md").read_text()
    records = sorted(p.name for p in ADR.glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert records
    missing = [name for name in records if f"]({name})" not in index]
    assert not missing, f"add to docs/adr/README.md: {missing}"
    numbers = [name[:4] for name in records]
    assert len(numbers) == len(set(numbers)), "two records share a number"
