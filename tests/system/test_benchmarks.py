"""Every benchmark once at a tiny size, so none of them rots (the real runs: make bench)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from benchmarks import (
    b1_hot_path,
    b2_end_to_end,
    b3_reports,
    b4_closing,
    b5_redis_stall,
    b6_import,
    b7_cluster,
    b8_dashboard,
)

from ..browser import require_chromium
from ..conftest import require_real_services

pytestmark = [pytest.mark.real, pytest.mark.system]


@pytest.fixture(autouse=True)
def _real() -> None:
    require_real_services()


def test_b1_hot_path() -> None:
    result = b1_hot_path.main(["--smoke"])
    for row in result["results"]:
        assert {row[v]["n"] for v in ("redis_store", "sql_store", "floor")} == {60}
        assert row["redis_vs_floor_p50"] > 0
        assert set(row["metrics_us"]) == {"single", "multiprocess"}
        assert all(cost > 0 for cost in row["metrics_us"].values())


def test_b2_end_to_end() -> None:
    [row] = b2_end_to_end.main(["--smoke"])["results"]
    assert all(row[route]["rps"] > 0 for route in b2_end_to_end.ROUTES)


def test_b3_reports() -> None:
    result = b3_reports.main(["--smoke"])
    end = datetime.now(timezone.utc)
    assert len(result["results"]) == len(b3_reports.rows_to_time(end))
    explained = {name.split(",")[0] for name in result["plans"]}
    assert explained == set(b3_reports.REPORTS) - {"dashboard"} | {b3_reports.WHAT_IF}
    assert all(result["plans"].values())  # each report's statements were explained
    assert result["class_times"]  # the split measured beside


def test_b4_closing() -> None:
    result = b4_closing.main(["--smoke"])
    assert result["sweep"]["sessions"] == 500
    assert result["lag"]["n"] == 20  # every session closed


def test_b5_redis_stall() -> None:
    ours, defaults, _ = b5_redis_stall.main(["--smoke"])["results"]
    assert ours["seconds"] is not None and ours["seconds"] < 1.0
    assert defaults["seconds"] is None  # redis-py's defaults are still waiting


def test_b6_import() -> None:
    result = b6_import.main(["--smoke"])
    assert [r["rows"] for r in result["imports"]] == [200, 200, 2000, 2000]
    assert all("skipped 0" in r["summary"] for r in result["imports"])
    assert result["whatif"]["n"] == 20
    assert result["copy_floor"]["rows"] == 2000 and result["copy_floor"]["rows_per_s"] > 0
    big = b6_import.main(["--smoke", "--log-lines", "2200"])
    assert big["lines"] == 2200 and big["summary"] == "read 1000 rows, imported 1000, skipped 0"


def test_b7_cluster() -> None:
    result = b7_cluster.main(["--smoke"])
    [row] = result["results"]
    assert {row[v]["n"] for v in ("cluster_store", "single_redis_store", "floor")} == {60}
    assert row["cluster_vs_floor_p50"] > 0
    load = result["load"]
    assert load["rps"] > 0 and load["p99_ms"] > 0
    assert (load["non_2xx"], load["lost"], load["duplicates"], load["keys_with_two_open"]) == (
        0,
        0,
        0,
        0,
    )
    assert load["sessions_match_reference"]
    assert (
        load["us_per_activity"]["app"] > 0 and load["us_per_activity"]["evalsha_per_activity"] > 0
    )


@pytest.mark.browser
def test_b8_dashboard() -> None:
    require_chromium()  # as the browser tests: skipped outside CI without it, failed under CI
    result = b8_dashboard.main(["--smoke"])
    assert set(result["server"]) == {"page", *b8_dashboard.PARTS}
    assert all(row["n"] == 3 and row["p50_ms"] > 0 for row in result["server"].values())
    browser = result["browser"]
    assert browser["n"] == 2
    assert 0 < browser["server_p50_ms"] <= browser["load_p50_ms"] <= browser["load_max_ms"]
