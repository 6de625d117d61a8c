"""``flask tutor-times ...``: a thin click layer over the extension's functions."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import with_appcontext

from .extension import EXTENSION_KEY

if TYPE_CHECKING:
    from .extension import TutorTimes


def extension() -> TutorTimes:
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise click.ClickException("TutorTimes is not registered on this app")
    return state.owner  # type: ignore[no-any-return]


@click.group("tutor-times")
def cli() -> None:
    """Marking-session maintenance."""


@cli.command("sweep")
@click.option("--now", type=click.DateTime(), default=None, help="Close as of this UTC time.")
@with_appcontext
def sweep_command(now: datetime | None) -> None:
    """Close every idle session once (for cron)."""
    from .accounting import UTC

    ext = extension()
    closed = ext.close_expired_sessions(now.replace(tzinfo=UTC) if now else None)
    click.echo(f"closed {closed} idle session{'s' if closed != 1 else ''}")
