"""How much of an IP address is kept (``TUTOR_TIMES_IP_STORAGE``).

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
from typing import Any

from .errors import ConfigurationError

IP_STORAGE_MODES = ("full", "truncated", "hashed")
#: prefix lengths kept by ``truncated``
IPV4_PREFIX, IPV6_PREFIX = 24, 48


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
