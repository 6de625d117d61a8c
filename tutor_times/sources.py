"""Files of history: CSV exports, read as rows to import, and what every reader shares.

Each reader streams its file a line at a time (plain or gzip), so memory stays flat whatever
the file's size (OnTrack's log is read by :mod:`.ontrack_log`, its tables by
:mod:`.ontrack_db`). Every
row carries its line number as its ``import_key``; with the file's identity as the source
key, importing a file again, or resuming an import that was killed, adds nothing twice.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from .history import MALFORMED, ROW_FIELDS, Rejected, Row

FORMATS = ("csv", "ontrack-log", "ontrack-db")
#: a CSV's header: a row's fields in the order the readers yield them, all but the import
#: key, which the reader makes from the file's identity and the line
CSV_COLUMNS = ROW_FIELDS[:-1]
ID_COLUMNS = ("marker_id", "unit_id", "project_id", "task_id", "task_definition_id")
#: the lines a file's identity is made of: a file that grows keeps its identity
IDENTITY_LINES = 8

class LogTarget(NamedTuple):
    """What one logged request did, as the host's ``log_path_resolver`` says."""

    #: None when the unit is not in the path (it is in the request's body): the request
    #: then takes the unit of the same user's previous request
    unit_id: int | None
    #: one of TUTOR_TIMES_ACTIONS; an ``assessing task N to <trigger>`` line of the request,
    #: with a trigger only staff may perform, makes it "assessing" task N
    action: str
    project_id: int | None = None
    task_id: int | None = None
    task_definition_id: int | None = None
    #: the user whose project it is: their own project is not marking (R7)
    owner_id: int | None = None


class Source:
    """An open file of history: text lines, and how far into the file they have been read."""

    def __init__(self, path: str) -> None:
        self.raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by close())
        compressed = self.raw.read(2) == b"\x1f\x8b"
        self.raw.seek(0)
        binary: Any = gzip.GzipFile(fileobj=self.raw) if compressed else self.raw
        self.text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")

    def position(self) -> int:
        """Bytes of the file read so far (compressed bytes for a .gz)."""
        return self.raw.tell()

    def close(self) -> None:
        self.text.close()
        self.raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def identity(path: str, fmt: str) -> str:
    """The file's source key: its format and a digest of its first lines (decompressed), so
    a log that grows, or the same log gzipped by rotation, keeps its identity."""
    digest = hashlib.sha256(fmt.encode())
    with Source(path) as source:
        for n, line in zip(range(IDENTITY_LINES), source.text, strict=False):
            if n == 0 and fmt == "csv" and "import_key" in next(csv.reader([line]), []):
                return "csv"  # the rows name their own keys, whatever file holds them
            digest.update(line.encode())
    return f"{fmt}:{digest.hexdigest()[:24]}"


# -- csv ---------------------------------------------------------------------------------


def csv_rows(text: IO[str]) -> Iterator[Row]:
    """One row per CSV record: the columns of CSV_COLUMNS, created_at in ISO 8601 with a zone.
    An ``import_key`` column, when present, is the row's source key instead of its line.
    Rows are tuples in ROW_FIELDS order; blank lines are skipped, as csv.DictReader does."""
    reader = csv.reader(text)
    header = next(reader, None) or []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"the CSV lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)}")
    keyed = "import_key" in header
    at_ip, at_action, at_time = (header.index(c) for c in ("ip_address", "action", "created_at"))
    at_ids = [header.index(c) for c in ID_COLUMNS]
    at_key = header.index("import_key") if keyed else -1
    for record in reader:
        if not record:
            continue
        try:
            marker, unit, project, task, definition = (_int(record[i]) for i in at_ids)
            row = (
                marker,
                unit,
                record[at_ip],
                record[at_action],
                project,
                task,
                definition,
                datetime.fromisoformat(record[at_time]),
                record[at_key] if keyed else reader.line_num,
            )
        except IndexError:
            yield Rejected(MALFORMED, f"line {reader.line_num}: a column is missing")
            continue
        except (TypeError, ValueError) as exc:
            yield Rejected(MALFORMED, f"line {reader.line_num}: {exc}")
            continue
        yield row


def _int(text: str | None) -> int | None:
    if text is None:
        raise ValueError("a column is missing")
    return int(text) if text.strip() else None


# -- ontrack-log (read by ontrack_log.py) --------------------------------------------------

#: what makes a logged URL need urlsplit and parse_qs rather than a split by hand
PLAIN_URL_UNSAFE = re.compile(r"[%+;\x00-\x20\x7f]")
#: the query parameter of a logged request that names its user
USERNAME_PARAM = "username="


def path_and_username(url: str) -> tuple[str, str | None]:
    """A logged request's path, and the first non-blank ``username`` of its query. A plain
    ``/path?a=b&…`` is split by hand; anything urlsplit or parse_qs would change (an
    escape, a ``+``, a scheme or host, a control character) goes through them."""
    if url.startswith("/") and not url.startswith("//") and not PLAIN_URL_UNSAFE.search(url):
        path, _, query = url.partition("#")[0].partition("?")
        for pair in query.split("&"):
            if pair.startswith(USERNAME_PARAM) and len(pair) > len(USERNAME_PARAM):
                return path, pair[len(USERNAME_PARAM) :]
        return path, None
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query).get("username", [None])[0]
