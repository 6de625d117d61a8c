"""The worker: one object that closes idle sessions for one app.

It owns the periodic sweep's loop, the Redis expiry listener's thread, how it stops (an
event, or SIGTERM/SIGINT when it is the process's main loop) and its one-pass mode for cron.
``flask tutor-times worker`` runs one in the foreground; the embedded mode runs one in a
daemon thread of each app process, without a listener.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from flask import Flask
from redis.cluster import RedisCluster

from .closer import ClusterExpiryListener, ExpiryListener

if TYPE_CHECKING:
    from ..app.maintenance import Maintenance

logger = logging.getLogger("tutor_times")


class Worker:
    def __init__(
        self,
        app: Flask,
        ext: Maintenance,
        *,
        interval: float | None = None,
        listen: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        state = ext.state_of(app)
        self.app = app
        self.ext = ext
        self.interval = state.settings.sweep_interval if interval is None else interval
        store = state.tracker.redis
        # the embedded store lives in this process: nobody else expires its keys
        self.store = store if listen and store is not None and not state.embedded else None
        self.stop_event = stop or threading.Event()
        self.thread: threading.Thread | None = None

    def sweep_once(self, now: datetime | None = None) -> int:
        """One pass of the sweep (as of ``now``, default the clock), then the heartbeat and
        housekeeping: how many sessions it closed. The loop, ``--burst`` and the ``sweep``
        command all run this. A pass whose sweep failed writes no heartbeat, so /health
        shows it."""
        with self.app.app_context():
            closed = self.ext.close_expired_sessions(now)
            self.ext.after_sweep()
            return closed

    def work(self, *, burst: bool = False) -> int:
        """Close idle sessions until stopped; with ``burst``, one pass and return. Returns
        how many sessions were closed."""
        if burst:
            return self.sweep_once()
        listener = self._start_listener()
        logger.info(
            "tutor-times worker started: sweep every %.1f s%s",
            self.interval,
            ", listening for expiry events" if listener else "",
        )
        closed = 0
        try:
            while not self.stop_event.is_set():
                # passes start an interval apart (at once after one that took longer): R6's
                # bound counts the interval between passes, not between one's end and the
                # next. After a failed pass, a whole interval: a database that fails slowly
                # is not retried back to back.
                began = time.monotonic()
                try:
                    closed += self.sweep_once()
                    pause = max(0.0, began + self.interval - time.monotonic())
                except Exception:
                    logger.exception(
                        "the idle-session sweep failed; retrying in %.1f s", self.interval
                    )
                    pause = self.interval
                self.stop_event.wait(pause)
        finally:
            self.stop_event.set()
            if listener is not None:
                listener.join(timeout=10)
        return closed

    def stop(self) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop after the pass in progress (the main thread's
        worker only: Python delivers signals there)."""

        def request_stop(signum: int, frame: object) -> None:
            logger.info("received %s; stopping", signal.Signals(signum).name)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, request_stop)

    def start_in_background(self) -> Worker:
        """Run :meth:`work` in a daemon thread of this process."""
        self.thread = threading.Thread(target=self.work, name="tutor-times-sweeper", daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def _start_listener(self) -> threading.Thread | None:
        store = self.store
        if store is None:
            return None
        app, ext = self.app, self.ext

        def close_key(key: tuple[int, int, str]) -> int:
            with app.app_context():
                return ext.close_idle_session(*key)

        listener: ExpiryListener | ClusterExpiryListener
        if isinstance(store.client, RedisCluster):
            listener = ClusterExpiryListener(
                store.client, parse_key=store.parse_key, close_key=close_key, stop=self.stop_event
            )
        else:
            listener = ExpiryListener(
                store.client, parse_key=store.parse_key, close_key=close_key, stop=self.stop_event
            )
        thread = threading.Thread(target=listener.run, name="tutor-times-listener", daemon=True)
        thread.start()
        return thread
