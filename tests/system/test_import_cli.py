"""The tests of ``integration/test_import_cli.py`` that start servers or processes of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tutor_times.history.rows import DUPLICATE

from ..conftest import PG_URL, Clock, build
from ..integration.test_history import stored_sessions
from ..integration.test_import_cli import ROOT, imported_count, write_history
from ..integration.test_property import TIMEOUT, reference


@pytest.mark.real
@pytest.mark.system
def test_an_import_killed_mid_file_resumes_without_adding_twice(
    tmp_path: Path, clock: Clock
) -> None:
    rows = 60_000
    path = tmp_path / "history.csv"
    stream = write_history(path, rows)
    for app in build("postgres"):
        env = {
            **os.environ,
            "FLASK_APP": "wsgi",
            "DEMO_CONFIG": "development",
            "DATABASE_URL": PG_URL,
            "TUTOR_TIMES_IN_PROCESS_SWEEPER": "false",
        }
        command = [sys.executable, "-m", "flask", "tutor-times", "import", str(path)]
        proc = subprocess.Popen(
            [*command, "--batch-size", "500"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while imported_count(app) < rows // 10:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        assert 0 < imported_count(app) < rows  # stopped mid-file
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"read {rows} rows" in done.stdout and DUPLICATE in done.stdout
        assert imported_count(app) == rows
        assert stored_sessions(app) == reference(stream, TIMEOUT)
