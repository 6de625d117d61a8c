"""Files of history: CSV exports, read as rows to import, and what every reader shares.

Each reader streams its file a line at a time (plain or gzip), so memory stays flat whatever
the file's size (OnTrack's log is read by :mod:`.ontrack_log`, its tables by
:mod:`.ontrack_db`). A line is read MAX_LINE at most: a longer one is skipped, counted as too
long, never held whole. Every row is keyed by what it says
(:func:`tutor_times.history.rows.content_key`) under its format, so importing a file again, an
edited, re-sorted or regenerated copy of it, or resuming an import that was killed, adds
nothing twice.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from operator import itemgetter
from typing import IO, Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from .rows import MALFORMED, ROW_FIELDS, TOO_LONG, Rejected, Row

FORMATS = ("csv", "ontrack-log", "ontrack-db")
#: a CSV's header: a row's fields in the order the readers yield them, all but the import
#: key, which the reader makes from the file's identity and the line
CSV_COLUMNS = ROW_FIELDS[:-1]
ID_COLUMNS = ("marker_id", "unit_id", "project_id", "task_id", "task_definition_id")
#: the lines a file's identity was made of before rows were keyed by content (line keys)
IDENTITY_LINES = 8
#: the longest line a reader takes, in characters (1 MiB of ASCII text); a longer one is
#: skipped and counted as TOO_LONG (an activity's row is a few hundred characters, a log's
#: line a few thousand)
MAX_LINE = 2**20
#: what reading a gzip raises where its data is damaged or ends early
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


class UnreadableFile(ValueError):
    """A file that cannot be read as what it says it is (a gzip that is not one)."""


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
    """An open file of history: its text lines (:meth:`lines`, bounded), and how far into
    the file they have been read.

    A file that starts with gzip's magic is read through gzip; one whose gzip header is not
    readable is refused (:class:`UnreadableFile`) before anything is read. A gzip damaged or
    cut short further on ends the lines there: :attr:`cut` says why, and the rows before it
    stand.
    """

    def __init__(self, path: str, *, max_line: int = MAX_LINE) -> None:
        self.path = path
        self.raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by close())
        compressed = self.raw.read(2) == b"\x1f\x8b"
        self.raw.seek(0)
        binary: Any = gzip.GzipFile(fileobj=self.raw) if compressed else self.raw
        if compressed:
            try:
                binary.peek(1)
            except (*GZIP_ERRORS, OSError) as exc:
                self.raw.close()
                raise UnreadableFile(f"{path} is not a readable gzip file: {exc}") from None
        self.text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
        #: the longest line read whole, in characters (UTF-8 takes at least a byte for each)
        self.max_line = max_line
        #: lines skipped as longer than max_line, so far
        self.too_long = 0
        #: why the lines ended before the file did (a damaged or truncated gzip), or None
        self.cut: str | None = None

    def lines(self) -> Iterator[str]:
        """The file's lines, each read max_line characters at most: a longer line is read
        on in bounded chunks to its end and given as an empty line (noise to every reader),
        and counted in :attr:`too_long`."""
        readline = self.text.readline
        limit = self.max_line + 1  # the longest line, and its end
        try:
            while line := readline(limit):
                if len(line) == limit and not line.endswith(("\n", "\r")):
                    while (rest := readline(limit)) and not rest.endswith(("\n", "\r")):
                        pass
                    self.too_long += 1
                    line = "\n"
                yield line
        except GZIP_ERRORS as exc:
            self.cut = f"{self.path} is cut short or damaged after {self.position()} bytes: {exc}"

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
    """The source key of a file's rows: its format. Rows are keyed by what they say (or by
    their own ``import_key`` column), so which file holds them does not matter."""
    return fmt


def line_keyed_identity(path: str, fmt: str) -> str | None:
    """The source key the file's rows had when rows were keyed by their line number: its
    format and a digest of its first IDENTITY_LINES lines (decompressed). Only the file's
    beginning is read, MAX_LINE characters a line at most. None for a CSV whose rows name
    their own keys (they were keyed by them then too), and for a file with a longer line
    among its first (its rows are read without that line now: they are new)."""
    digest = hashlib.sha256(fmt.encode())
    with Source(path) as source:
        for n in range(IDENTITY_LINES):
            try:
                line = source.text.readline(source.max_line + 1)
            except GZIP_ERRORS:
                return None  # cut short so early that no earlier import read a row of it
            if len(line) > source.max_line and not line.endswith(("\n", "\r")):
                return None
            if n == 0 and fmt == "csv" and "import_key" in next(csv.reader([line]), []):
                return None
            digest.update(line.encode())
    return f"{fmt}:{digest.hexdigest()[:24]}"


def counting_long_lines(source: Source, rows: Iterable[Row]) -> Iterator[Row]:
    """``rows`` read from ``source``, with a Rejected row for each line it skipped as too long
    (counted in the import's report)."""
    told = 0
    for row in rows:
        while told < source.too_long:
            told += 1
            yield Rejected(TOO_LONG, f"a line over {source.max_line} characters")
        yield row
    while told < source.too_long:
        told += 1
        yield Rejected(TOO_LONG, f"a line over {source.max_line} characters")


# -- csv ---------------------------------------------------------------------------------


def csv_rows(text: Iterable[str]) -> Iterator[Row]:
    """One row per CSV record: the columns of CSV_COLUMNS, created_at in ISO 8601 with a zone.
    A row is keyed by its content (its key is None here), or by its ``import_key`` column
    when the file has one. Rows are tuples in ROW_FIELDS order; blank lines are skipped, as
    csv.DictReader does; a record csv cannot parse (a field over its limit) is malformed."""
    reader = csv.reader(text)
    header = next(reader, None) or []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"the CSV lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)}")
    keyed = "import_key" in header
    at_ip, at_action, at_time = (header.index(c) for c in ("ip_address", "action", "created_at"))
    ids_of = itemgetter(*(header.index(c) for c in ID_COLUMNS))
    at_key = header.index("import_key") if keyed else -1
    for record in _records(reader):
        if isinstance(record, Rejected):
            yield record
            continue
        if not record:
            continue
        try:
            # an id left blank is None (a list, not a call a field: a fifth of reading a row)
            marker, unit, project, task, definition = [
                int(text) if text.strip() else None for text in ids_of(record)
            ]
            row = (
                marker,
                unit,
                record[at_ip],
                record[at_action],
                project,
                task,
                definition,
                datetime.fromisoformat(record[at_time]),
                record[at_key] if keyed else None,
            )
        except IndexError:
            yield Rejected(MALFORMED, f"line {reader.line_num}: a column is missing")
            continue
        except (TypeError, ValueError) as exc:
            yield Rejected(MALFORMED, f"line {reader.line_num}: {exc}")
            continue
        yield row


def _records(reader: Any) -> Iterator[list[str] | Rejected]:
    """A csv reader's records; one csv refuses is a Rejected row, and reading goes on with
    the next line (the reader starts a record afresh after an error)."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Rejected(MALFORMED, f"line {reader.line_num}: {exc}")


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
