"""The read models: sessions, the R10 merge, the summary, tasks, the timeline and the what-if
report, each a pure function of a connection, the tables and a :class:`Scope`, over the stored
sessions and figures.

One read model a module (:mod:`.sessions`, :mod:`.summary`, :mod:`.tasks`, :mod:`.timeline`,
:mod:`.whatif`), with what they share beside them (:mod:`.scope`, :mod:`.merge`,
:mod:`.figured`); the web layer calls the functions this package exports. An open session counts
up to its last activity so far.
"""

from .figured import bucket_index, figured_by
from .merge import block_minutes, merged_blocks, merged_split_by
from .scope import Scope
from .sessions import active_sessions, activity_row, session_detail, sessions_page, units_of
from .summary import summary, with_rate
from .tasks import tasks
from .timeline import empty_buckets, timeline

__all__ = [
    "Scope",
    "active_sessions",
    "activity_row",
    "block_minutes",
    "bucket_index",
    "empty_buckets",
    "figured_by",
    "merged_blocks",
    "merged_split_by",
    "session_detail",
    "sessions_page",
    "summary",
    "tasks",
    "timeline",
    "units_of",
    "with_rate",
]
