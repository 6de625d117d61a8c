"""``flask tutor-times ...``: a thin click layer over the extension's functions."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..closing.worker import Worker
from ..core import metrics
from ..core.errors import ConfigurationError
from ..history import ontrack_db
from ..history.importer import BATCH_SIZE
from ..history.ontrack_log import OnTrackLog, UnrecognisedLog, staff_check
from ..history.rows import ImportReport
from ..history.sources import (
    FORMATS,
    Source,
    counting_long_lines,
    csv_rows,
    identity,
    line_keyed_identity,
)
from .services import Services, services


def extension() -> Services:
    try:
        return services()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("tutor-times")
def cli() -> None:
    """Marking-session maintenance."""


@cli.command("sweep")
@click.option(
    "--now",
    type=click.DateTime(),
    default=None,
    help="Close as of this UTC time (not later than the clock).",
)
@with_appcontext
def sweep_command(now: datetime | None) -> None:
    """One pass of the worker (for cron): close every idle session, then the worker's
    housekeeping (its heartbeat, expired idempotency keys, retention)."""
    from ..core.accounting import UTC

    ext = extension()
    as_of = None if now is None else now.replace(tzinfo=UTC)
    # a time still to come would close sessions whose tutors are marking now
    if as_of is not None and as_of > ext.clock():
        raise click.BadParameter(
            "lies in the future; sessions are closed as of now", param_hint="--now"
        )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    closed = Worker(app, ext, listen=False).sweep_once(as_of)
    click.echo(f"closed {closed} idle session{'s' if closed != 1 else ''}")


@cli.command("purge")
@click.option(
    "--before",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    required=True,
    help="Sessions that ended before this UTC date or time.",
)
@click.option("--anonymize", is_flag=True, help="Keep the sessions; blank their IP addresses.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def purge_command(before: datetime, anonymize: bool, yes: bool) -> None:
    """Remove old sessions and their activities (or only their IPs), in batches."""
    from ..core.accounting import UTC

    ext = extension()
    before = before.replace(tzinfo=UTC)
    if before > ext.clock():
        raise click.BadParameter("lies in the future", param_hint="--before")
    total = ext.purge_count(before, anonymize=anonymize)
    what = "strip the IP addresses of" if anonymize else "delete"
    if total == 0:
        click.echo("nothing to purge")
        return
    if not yes:
        click.confirm(
            f"{what} {total} session{'s' if total != 1 else ''} that ended before"
            f" {before:%Y-%m-%d %H:%M} UTC?",
            abort=True,
        )
    with click.progressbar(length=total, label="purging", file=sys.stderr) as bar:
        done = ext.purge(before, anonymize=anonymize, progress=bar.update)
    click.echo(
        f"{'anonymized' if anonymize else 'deleted'} {done} session{'s' if done != 1 else ''}"
    )


@cli.command("worker")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=None,
    help="Seconds between sweeps (default: TUTOR_TIMES_SWEEP_INTERVAL).",
)
@click.option("--no-listen", is_flag=True, help="Sweep only; ignore Redis expiry events.")
@click.option("--burst", is_flag=True, help="One sweep, then exit (like `sweep`, for cron).")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this worker's Prometheus metrics on this port.",
)
@click.option(
    "--metrics-address", default="127.0.0.1", show_default=True, help="Address to serve them on."
)
@with_appcontext
def worker_command(
    interval: float | None,
    no_listen: bool,
    burst: bool,
    metrics_port: int | None,
    metrics_address: str,
) -> None:
    """Close idle sessions: Redis expiry listener plus a periodic sweep, until SIGTERM/SIGINT."""
    ext = extension()
    logger = logging.getLogger("tutor_times")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    worker = Worker(app, ext, interval=interval, listen=not no_listen)
    if burst:
        closed = worker.work(burst=True)
        click.echo(f"closed {closed} idle session{'s' if closed != 1 else ''}")
        return
    if metrics_port is not None:
        metrics.serve(metrics_port, metrics_address)
        logger.info("metrics on http://%s:%d/", metrics_address, metrics_port)
    worker.install_signal_handlers()
    worker.work()
    logger.info("tutor-times worker stopped")


@cli.command("import")
@click.argument("path", type=click.Path(exists=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="csv",
    show_default=True,
    help="csv: one activity per row; ontrack-log: OnTrack's Rails log (plain or .gz);"
    " ontrack-db: OnTrack's marking_sessions and session_activities tables as CSV (a folder"
    " holding both, or the activities' file with the sessions' beside it).",
)
@click.option("--dry-run", is_flag=True, help="Read and check everything; write nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=BATCH_SIZE,
    show_default=True,
    help="Rows per transaction.",
)
@with_appcontext
def import_command(path: str, fmt: str, dry_run: bool, batch_size: int) -> None:
    """Import historical activities into sessions, as live tracking would have made them.

    Run it again on the same file, or after it was stopped, and nothing is added twice."""
    ext = extension()
    cut = None
    try:
        if fmt == "ontrack-db":
            report = _import_ontrack_db(ext, path, dry_run, batch_size)
        else:
            if os.path.isdir(path):
                raise ValueError(f"{path} is a folder: --format {fmt} reads one file")
            report, cut = _import_file(ext, path, fmt, dry_run, batch_size)
    except UnrecognisedLog as exc:
        raise click.ClickException(f"{path} is not an OnTrack log: {exc}") from None
    except (ConfigurationError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.summary())
    if cut is not None:
        raise click.ClickException(
            f"{cut}. The rows before it are counted above; import the whole file"
            " when you have it: nothing is added twice."
        )


def _import_file(
    ext: Services, path: str, fmt: str, dry_run: bool, batch_size: int
) -> tuple[ImportReport, str | None]:
    """A CSV or an OnTrack log, streamed; with where a damaged gzip broke off, if it did."""
    reader = None
    if fmt == "ontrack-log":
        resolve_path, resolve_username = ext.log_resolvers()
        reader = OnTrackLog(resolve_path, resolve_username, staff_check(ext.role_of))
    source_key = identity(path, fmt)
    line_source = line_keyed_identity(path, fmt)
    if line_source is not None and not dry_run:
        adopted = ext.adopt_line_keys(line_source, source_key)
        if adopted:
            click.echo(f"keyed {adopted} rows imported from this file by line anew", err=True)
    with Source(path) as source:
        lines = source.lines()
        rows = reader.rows(lines) if reader else csv_rows(lines)
        with progress_reporter(os.path.getsize(path), source.position) as progress:
            report = ext.import_activities(
                counting_long_lines(source, rows),
                source_key=source_key,
                dry_run=dry_run,
                batch_size=batch_size,
                progress=progress,
            )
        return report, source.cut


def _import_ontrack_db(ext: Services, path: str, dry_run: bool, batch_size: int) -> ImportReport:
    """OnTrack's exported tables: the activities, keyed by OnTrack's ids."""
    _, activities = ontrack_db.table_paths(path)
    # the progress is the rows read; the file's bytes are read inside the reader
    with progress_reporter(os.path.getsize(activities), lambda: 0) as progress:
        return ext.import_activities(
            ontrack_db.rows(path),
            source_key=ontrack_db.SOURCE_KEY,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
        )


@contextlib.contextmanager
def progress_reporter(
    total: int, position: Callable[[], int], *, every: float = 5.0
) -> Iterator[Callable[[ImportReport], None]]:
    """On a terminal, a progress bar over the file's bytes with rows/s and the ETA; otherwise
    (cron, a pipe, a log) a plain line every ``every`` seconds."""
    started = time.monotonic()

    def rate(report: ImportReport) -> str:
        per_second = report.read / max(time.monotonic() - started, 1e-9)
        return f"{report.read} rows, {per_second:,.0f} rows/s"

    if sys.stderr.isatty():
        bar: Any
        with click.progressbar(
            length=max(total, 1),
            label="importing",
            file=sys.stderr,
            show_eta=True,
            item_show_func=lambda r: rate(r) if r is not None else None,
        ) as bar:
            yield lambda report: bar.update(position() - bar.pos, report)
        return
    last = [started]

    def line(report: ImportReport) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            done = 100 * position() / max(total, 1)
            click.echo(f"{rate(report)}, {done:.0f}% of the file", err=True)

    yield line


@cli.command("rebuild")
@click.option("--unit", "unit_id", type=click.IntRange(min=1), default=None, help="One unit only.")
@click.option(
    "--from",
    "start",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Sessions starting at or after this UTC date or time.",
)
@click.option(
    "--to",
    "end",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Sessions starting before this UTC date or time.",
)
@with_appcontext
def rebuild_command(unit_id: int | None, start: datetime | None, end: datetime | None) -> None:
    """Re-derive sessions from their activities after TUTOR_TIMES_SESSION_TIMEOUT changed.

    Safe while tracking runs; run it again to resume: keys already right are left alone."""
    from ..core.accounting import UTC

    ext = extension()
    report = ext.rebuild_sessions(
        unit_id=unit_id,
        start=start.replace(tzinfo=UTC) if start else None,
        end=end.replace(tzinfo=UTC) if end else None,
    )
    click.echo(report.summary())
