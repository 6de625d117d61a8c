"""How much of an IP address is kept (``TUTOR_TIMES_IP_STORAGE``), and removing old data.

The chosen form is applied once, in the tracker, before anything is stored or used as a
key: the SQL column, the Redis key and the reports all see the same value, so sessions stay
keyed consistently (R1) whatever the mode, and no raw address reaches Redis or SQL unless
the mode is ``full``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .errors import ConfigurationError
from .models import Models

IP_STORAGE_MODES = ("full", "truncated", "hashed")
#: prefix lengths kept by ``truncated``
IPV4_PREFIX, IPV6_PREFIX = 24, 48
#: what ``purge --anonymize`` leaves in place of an address
ANONYMIZED = ""


def truncate(ip: str) -> str:
    """The address's network: IPv4 /24, IPv6 /48 (an IPv4-mapped IPv6 address as IPv4)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def ip_policy(mode: str, secret: Any) -> Callable[[str], str]:
    """The function that turns a validated, normalized address into the stored form."""
    if mode == "full":
        return str
    if mode == "truncated":
        return truncate
    if mode == "hashed":
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ConfigurationError(
                "TUTOR_TIMES_IP_STORAGE = 'hashed' needs a secret of at least 16 bytes in"
                " TUTOR_TIMES_IP_HASH_KEY (or SECRET_KEY)"
            )
        key: bytes = secret

        def hashed(ip: str) -> str:
            return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()

        return hashed
    raise ConfigurationError(
        f"TUTOR_TIMES_IP_STORAGE must be one of {', '.join(IP_STORAGE_MODES)}, got {mode!r}"
    )


def purge(
    connect: Callable[[], sa.Connection],
    models: Models,
    *,
    before: datetime,
    anonymize: bool,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete the closed sessions that ended before ``before``, with their activities — or,
    with ``anonymize``, only blank their IP addresses. One batch per transaction; returns
    how many sessions it changed and reports each batch to ``progress``."""
    ms, act = models.MarkingSession.__table__, models.SessionActivity.__table__
    scope = _purge_scope(models, before, anonymize)
    done = 0
    while True:
        with connect() as conn:
            ids = conn.scalars(
                sa.select(ms.c.id).where(*scope).order_by(ms.c.id).limit(batch_size)
            ).all()
            if not ids:
                return done
            if anonymize:
                conn.execute(sa.update(ms).where(ms.c.id.in_(ids)).values(ip_address=ANONYMIZED))
            else:
                conn.execute(sa.delete(act).where(act.c.marking_session_id.in_(ids)))
                conn.execute(sa.delete(ms).where(ms.c.id.in_(ids)))
            conn.commit()
        done += len(ids)
        if progress is not None:
            progress(len(ids))


def purge_count(conn: sa.Connection, models: Models, *, before: datetime, anonymize: bool) -> int:
    """How many sessions :func:`purge` would change."""
    scope = _purge_scope(models, before, anonymize)
    query = sa.select(sa.func.count()).select_from(models.MarkingSession).where(*scope)
    return int(conn.execute(query).scalar_one())


def _purge_scope(models: Models, before: datetime, anonymize: bool) -> list[Any]:
    ms = models.MarkingSession
    scope = [ms.end_time.is_not(None), ms.end_time < before]
    if anonymize:
        scope.append(ms.ip_address != ANONYMIZED)
    return scope
