"""The tests of ``integration/test_docs.py`` that start servers or processes of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..integration.test_docs import ROOT, quickstart_steps, same_shape, wait_for_port
from ..servers import free_port


@pytest.mark.system
def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    """``make run`` on a new SQLite file (DATABASE_URL), then every command of the page in
    order, on its port, with its output compared to the one shown; ``make test`` is checked
    by what it would run (running the suite from inside the suite would never end)."""
    steps = quickstart_steps()
    first, *walk = steps
    assert first[0].splitlines()[0].startswith("make run") and "make test" in first[0]
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0 and "-m pytest" in dry.stdout, dry.stdout + dry.stderr
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"TUTOR_TIMES_REDIS_URL", "DEMO_CONFIG", "SECRET_KEY", "MAKEFLAGS"}
    }
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite'}", PYTHONPATH=str(ROOT))
    log = (tmp_path / "make-run.log").open("wb")
    server = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, server, time.monotonic() + 180)
        for command, kind, shown in walk:
            command = command.replace("127.0.0.1:5000", f"127.0.0.1:{port}")
            command = command.replace(".venv/bin/", f"{ROOT / '.venv' / 'bin'}/")
            ran = subprocess.run(
                ["bash", "-e", "-c", command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
            if kind is None or shown is None:
                continue
            out = [line for line in ran.stdout.splitlines() if line.strip()]
            expected = shown.splitlines()
            assert len(out) == len(expected), (command, out)
            for line, want in zip(out, expected, strict=True):
                if kind != "json":
                    assert line == want, command
                elif '"sessions"' in want:  # ids and times are the run's own
                    answer, example = json.loads(line), json.loads(want)
                    assert same_shape(answer, example), (line, want)
                    assert {s["marker_id"] for s in answer["sessions"]} == {3}
                    assert all(s["active"] for s in answer["sessions"])
                else:
                    assert json.loads(line) == json.loads(want), command
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
