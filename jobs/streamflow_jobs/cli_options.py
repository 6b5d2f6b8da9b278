"""Command-line options shared by several commands (one declaration, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ShadowRules = Annotated[
    Path | None, typer.Option(help="A challenger's rules, run in shadow (default: --rules)")
]
ShadowModel = Annotated[
    Path | None, typer.Option(help="A challenger's model, run in shadow (default: --model)")
]
