"""CLI commands for the 'featvis' concern (see the module's library counterpart)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this concern's commands to ``app``."""
