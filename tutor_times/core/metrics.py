"""Prometheus metrics: every instrument of the extension, and its exposition.

The steps of the flow call the small functions below (one line at each place); nothing else
in the package imports ``prometheus_client``. Metrics are per process, as Prometheus
expects. Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
folder for the app and its ``tutor-times`` commands (before they start): each process then
writes its values to files there, and ``/metrics`` adds them up across processes, including
those of the worker command on the same machine.

A process that ends folds its counters and histograms into one file per type
(``counter_archive.db``, ``histogram_archive.db``) and removes its own files: every flask
command run from cron, and every worker gunicorn replaces, would otherwise leave three files
that each scrape reads again, without end. Its live gauges go (a gauge of a process that is
gone means nothing). Scrapes read under the same lock, so no scrape sees a process's values
both in its files and in the archive.

The hot path pays one dictionary lookup and prometheus_client's own increment per activity:
labelled children are looked up once and kept, so no lock of ours is taken (see
benchmarks/b1_hot_path.py for the measured cost).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.mmap_dict import MmapedDict as _MmapedDict
from prometheus_client.registry import Collector

#: how an activity was recorded: the open session the Redis cache knew; SQL deciding
#: (a new session, a late activity, or no Redis configured); SQL alone because Redis failed
CACHED, SQL, FALLBACK = "cached", "sql", "fallback"
#: what closed a session: a Redis expiry event, the periodic sweep, the key's next activity
EXPIRY, SWEEP, NEXT_ACTIVITY = "expiry", "sweep", "next_activity"

ACTIVITIES = Counter(
    "tutor_times_activities_recorded",
    "Activities stored, by how they were recorded and by action.",
    ["path", "action"],
)
FAILURES = Counter(
    "tutor_times_tracking_failures",
    "Tracking failures: request (a tracked view's activity was lost), report"
    " (POST /activities answered 503), redis (a Redis error; the activity went through SQL).",
    ["kind"],
)
KEYS_REUSED = Counter(
    "tutor_times_idempotency_keys_reused",
    "Tracked requests whose Idempotency-Key the same user had sent before with another"
    " request target (a client's mistake): each was recorded as a request of its own.",
)
BREAKER_OPEN = Gauge(
    "tutor_times_redis_breaker_open",
    "1 while a process skips Redis after an error (the circuit breaker is open), else 0.",
    multiprocess_mode="livemax",
)
BREAKER_TRIPS = Counter(
    "tutor_times_redis_breaker_trips", "Times the Redis circuit breaker opened."
)
SESSIONS_OPENED = Counter("tutor_times_sessions_opened", "Marking sessions created.")
SESSIONS_CLOSED = Counter(
    "tutor_times_sessions_closed", "Marking sessions closed, by what closed them.", ["closer"]
)
CLOSING_LAG = Histogram(
    "tutor_times_closing_lag_seconds",
    "Seconds between a session's idle deadline (last activity + TIMEOUT) and its closing.",
    ["closer"],
    buckets=(1, 5, 15, 30, 60, 90, 120, 300, 600, 1800, 3600, 14400, 86400),
)
TRACKING_SECONDS = Histogram(
    "tutor_times_tracking_seconds",
    "Seconds tracking added to a tracked request (after the view answered).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RETENTION = Counter(
    "tutor_times_retention_sessions",
    "Sessions removed (delete) or stripped of their IP address (anonymize) by retention.",
    ["mode"],
)

IMPORT_ROWS = Counter(
    "tutor_times_import_rows",
    "Rows of history imports, as each batch is done: read, imported, and skipped (by reason).",
    ["outcome"],
)

_activity_children: dict[tuple[str, str], Any] = {}
_lag_children = {closer: CLOSING_LAG.labels(closer) for closer in (EXPIRY, SWEEP, NEXT_ACTIVITY)}
_closed_children = {c: SESSIONS_CLOSED.labels(c) for c in (EXPIRY, SWEEP, NEXT_ACTIVITY)}
BREAKER_OPEN.set(0)


def recorded(path: str, action: str) -> None:
    child = _activity_children.get((path, action))
    if child is None:
        # labels() is idempotent: two threads racing here get the same child
        child = _activity_children[(path, action)] = ACTIVITIES.labels(path, action)
    child.inc()


def failed(kind: str) -> None:
    FAILURES.labels(kind).inc()


def key_reused() -> None:
    KEYS_REUSED.inc()


def breaker_changed(open_: bool) -> None:
    """A change of the breaker's state (it reports changes only, never each call)."""
    BREAKER_OPEN.set(1 if open_ else 0)
    if open_:
        BREAKER_TRIPS.inc()


def session_opened() -> None:
    SESSIONS_OPENED.inc()


def sessions_closed(closer: str, lags: Iterable[float]) -> None:
    """Sessions just closed by ``closer``, each with its seconds past its idle deadline."""
    histogram = _lag_children[closer]
    n = 0
    for lag in lags:
        histogram.observe(max(0.0, lag))
        n += 1
    if n:
        _closed_children[closer].inc(n)


def tracking_took(seconds: float) -> None:
    TRACKING_SECONDS.observe(seconds)


def import_progress(read: int, imported: int, skipped: Mapping[str, int]) -> None:
    """One import batch's rows: how many were read, imported, and skipped for each reason."""
    if read:
        IMPORT_ROWS.labels("read").inc(read)
    if imported:
        IMPORT_ROWS.labels("imported").inc(imported)
    for reason, n in skipped.items():
        if n:
            IMPORT_ROWS.labels(f"skipped_{reason.replace(' ', '_')}").inc(n)


def retained(anonymize: bool, n: int) -> None:
    RETENTION.labels("anonymize" if anonymize else "delete").inc(n)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


#: prometheus_client's file of one process's values (untyped there)
MmapedDict: Any = _MmapedDict
#: the file (no ``.db``: never read as values) that folding and scraping lock
LOCK_FILE = "tutor_times.lock"
#: the types whose values add up across processes, so that a dead one's fold into one file
FOLDED = ("counter", "histogram", "summary")


@contextlib.contextmanager
def _locked(directory: str, *, shared: bool = False) -> Iterator[None]:
    """The folder's lock: exclusive to fold a process's files in, shared to read them."""
    with open(os.path.join(directory, LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def retire(pid: int, directory: str) -> None:
    """Fold the values of process ``pid`` (ended) into the folder's archive files and
    remove its files; forget its live gauges. Nothing of a process that left no files."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    with _locked(directory):
        for typ in FOLDED:
            dead = os.path.join(directory, f"{typ}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = MmapedDict(os.path.join(directory, f"{typ}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                    kept, _ = archive.read_value(key)
                    archive.write_value(key, kept + value, timestamp)
            finally:
                archive.close()
            os.remove(dead)


@atexit.register
def _retire_this_process() -> None:
    """At the exit of any process that wrote to PROMETHEUS_MULTIPROC_DIR (registered once
    at import; a forked process runs it with its own pid)."""
    directory = multiprocess_dir()
    if directory is not None and os.path.isdir(directory):
        with contextlib.suppress(OSError):  # the folder's own trouble; the exit goes on
            retire(os.getpid(), directory)


class _FoldedCollector(Collector):
    """Every process's values in the folder, read under its shared lock."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.inner: Any = multiprocess.MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        with _locked(self.directory, shared=True):
            return list(self.inner.collect())


def _registry() -> CollectorRegistry:
    """Every process's values when several write to PROMETHEUS_MULTIPROC_DIR, else this
    process's."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(_FoldedCollector(directory))
    return registry


def exposition() -> tuple[bytes, str]:
    """The text to scrape and its content type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def serve(port: int, address: str) -> None:
    """Serve the metrics over HTTP from a thread of this process: for a worker command that
    runs where no web process shares its PROMETHEUS_MULTIPROC_DIR."""
    start_http_server(port, addr=address, registry=_registry())


def process_exited(pid: int) -> None:
    """For gunicorn's ``child_exit`` hook: fold a dead worker's values into the archive
    (a worker killed before its own exit could do it) and forget its gauges."""
    directory = multiprocess_dir()
    if directory is not None:
        retire(pid, directory)
