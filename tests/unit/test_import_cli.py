"""The tests of ``integration/test_import_cli.py`` that need no app and no database."""

from __future__ import annotations

import pytest

from tutor_times.app.cli import progress_reporter
from tutor_times.history.rows import ImportReport


def test_progress_off_a_terminal_is_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_reporter(1000, lambda: 500, every=0) as progress:
        progress(ImportReport(read=10))
    err = capsys.readouterr().err
    assert "10 rows" in err and "rows/s, 50% of the file" in err
