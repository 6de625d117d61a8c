"""IP privacy: TUTOR_TIMES_IP_STORAGE keeps sessions consistently keyed and keeps raw
addresses out of SQL and Redis unless it is "full"; ``purge`` removes old data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from demo.extensions import tutor_times
from tutor_times import ConfigurationError

from ..conftest import (
    BACKENDS,
    Clock,
    activities,
    build,
    built,
    cache_of,
    play_scenario,
    sessions,
)

RAW = "192.0.2.77"
SAME_NETWORK = "192.0.2.200"
RAW_V6 = "2001:db8:abcd:1234::1"


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["full", "truncated", "hashed"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def private_app(backend_name: str, store: str, mode: str, clock: Clock) -> Iterator[Flask]:
    yield from build(
        backend_name,
        TUTOR_TIMES_STORE=store,
        TUTOR_TIMES_IP_STORAGE=mode,
        TUTOR_TIMES_IP_HASH_KEY="k" * 32,
    )


def record(app: Flask, ip: str) -> int:
    with app.app_context():
        activity = tutor_times.record_activity("inbox", marker_id=3, unit_id=1, ip_address=ip)
        return int(activity.marking_session_id)


def redis_contents(app: Flask) -> str:
    """Every key and value of this app's prefix, as one string."""
    client = tutor_times.state_of(app).redis  # None with the SQL store: nothing is cached
    if client is None:
        return ""
    prefix = app.config["TUTOR_TIMES_REDIS_PREFIX"]
    parts = []
    for key in client.scan_iter(match=f"{prefix}:*"):
        parts.append(key.decode() if isinstance(key, bytes) else key)
        for field, value in client.hgetall(key).items():
            parts += [str(field), str(value)]
    return " ".join(parts)


def test_each_mode_keys_sessions_consistently(
    private_app: Flask, mode: str, clock: Clock, store: str
) -> None:
    first = record(private_app, RAW)
    clock.advance(minutes=1)
    assert record(private_app, RAW) == first  # the same address: the same session (R1)
    clock.advance(minutes=1)
    neighbour = record(private_app, SAME_NETWORK)
    assert (neighbour == first) is (mode == "truncated")  # one /24 is one key when truncated
    clock.advance(minutes=1)
    record(private_app, RAW_V6)

    stored = {s.ip_address for s in sessions(private_app)}
    seen = " ".join(stored) + " " + redis_contents(private_app)
    if store == "redis":
        assert redis_contents(private_app), "the Redis store holds the open sessions' keys"
    if mode == "full":
        assert stored == {RAW, SAME_NETWORK, RAW_V6}
    else:
        for ip in (RAW, SAME_NETWORK, RAW_V6, "2001:db8:abcd:1234"):
            assert ip not in seen
    if mode == "hashed":
        assert "192.0.2" not in seen and "2001:db8" not in seen  # not even the network
    if mode == "truncated":
        assert stored == {"192.0.2.0/24", "2001:db8:abcd::/48"}
    if mode == "hashed":
        assert len(stored) == 3
        assert all(len(ip) == 64 and int(ip, 16) >= 0 for ip in stored)
    assert len(activities(private_app)) == 4


def test_a_hashed_session_is_closed_from_its_redis_key(backend_name: str, clock: Clock) -> None:
    with built(
        backend_name,
        TUTOR_TIMES_STORE="redis",
        TUTOR_TIMES_IP_STORAGE="hashed",
        TUTOR_TIMES_IP_HASH_KEY="k" * 32,
    ) as app:
        record(app, RAW)
        store = cache_of(app)
        [key] = store.client.keys(f"{app.config['TUTOR_TIMES_REDIS_PREFIX']}:*")
        parsed = store.parse_key(key.decode() if isinstance(key, bytes) else key)
        assert parsed is not None and RAW not in parsed[2]
        with app.app_context():
            assert tutor_times.close_idle_session(*parsed, now=clock() + timedelta(hours=1)) == 1
        assert sessions(app)[0].end_time is not None


def test_the_hash_depends_on_the_secret(backend_name: str, clock: Clock) -> None:
    stored = []
    for secret in ("a" * 32, "b" * 32):
        with built(
            backend_name, TUTOR_TIMES_IP_STORAGE="hashed", TUTOR_TIMES_IP_HASH_KEY=secret
        ) as app:
            record(app, RAW)
            stored.append(sessions(app)[0].ip_address)
    assert stored[0] != stored[1]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"TUTOR_TIMES_IP_STORAGE": "partial"}, "TUTOR_TIMES_IP_STORAGE must be one of"),
        (
            {"TUTOR_TIMES_IP_STORAGE": "hashed", "SECRET_KEY": None},
            "needs a secret of at least 16 bytes",
        ),
        (
            {"TUTOR_TIMES_IP_STORAGE": "hashed", "TUTOR_TIMES_IP_HASH_KEY": "short"},
            "needs a secret of at least 16 bytes",
        ),
    ],
)
def test_bad_privacy_settings_are_refused(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        next(build("sqlite", **config))


# -- purge -------------------------------------------------------------------------------------


@pytest.fixture
def old_data(app: Flask, clock: Clock) -> Flask:
    return play_scenario(app, clock)


def purge(app: Flask, *args: str, input: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``flask tutor-times purge ARGS``."""
    result = app.test_cli_runner().invoke(args=["tutor-times", "purge", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_purge_deletes_old_sessions_and_their_activities(old_data: Flask) -> None:
    before = {s.id for s in sessions(old_data)}
    code, out, err = purge(old_data, "--before", "2026-03-02T23:00:00", "--yes")
    assert code == 0, out
    left = sessions(old_data)
    # ended before 23:00 on 2026-03-02: the session of 02-28 and four of 03-02 (unit 1 and 2)
    assert "deleted 5 sessions" in out
    assert "purging" in err  # the progress bar, on stderr
    assert len(left) == len(before) - 5
    assert all(
        s.end_time is None or s.end_time >= datetime(2026, 3, 2, 23, tzinfo=timezone.utc)
        for s in left
    )
    assert {a.marking_session_id for a in activities(old_data)} == {s.id for s in left}


def test_purge_anonymize_keeps_the_numbers(old_data: Flask) -> None:
    code, out, _ = purge(old_data, "--before", "2026-03-02", "--anonymize", "--yes")
    assert code == 0 and "anonymized 1 session" in out
    by_start = {s.start_time.day: s.ip_address for s in sessions(old_data)}
    assert by_start[28] == ""
    assert len(activities(old_data)) == 13  # nothing deleted
    again = purge(old_data, "--before", "2026-03-02", "--anonymize", "--yes")
    assert "nothing to purge" in again[1]


def test_purge_asks_first_and_never_touches_open_sessions(old_data: Flask) -> None:
    n = len(sessions(old_data))
    code, out, _ = purge(old_data, "--before", "2026-03-03", input="n\n")
    assert code != 0 and "delete 5 sessions that ended before 2026-03-03 00:00 UTC?" in out
    assert len(sessions(old_data)) == n
    code, out, _ = purge(old_data, "--before", "2026-03-03T00:27:00", "--yes")
    assert code == 0
    [still_open] = sessions(old_data)
    assert still_open.end_time is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--before", "2027-01-01"], "lies in the future"),
        (["--before", "yesterday"], "Invalid value for '--before'"),
        ([], "Missing option '--before'"),
    ],
)
def test_purge_refuses_bad_dates(old_data: Flask, args: list[str], message: str) -> None:
    code, _, err = purge(old_data, *args, "--yes")
    assert code == 2 and message in err


def test_times_without_a_zone_are_refused(old_data: Flask) -> None:
    naive = datetime(2026, 3, 2)
    with old_data.app_context():
        for call in (
            lambda: tutor_times.purge(naive),
            lambda: tutor_times.purge_count(naive),
            lambda: tutor_times.close_expired_sessions(naive),
        ):
            with pytest.raises(ValueError, match="must be an aware datetime"):
                call()
    assert len(activities(old_data)) == 13  # nothing touched
