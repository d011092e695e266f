"""Who may read metrics: off unless METRICS_TOKEN or METRICS_ALLOWED_NETWORKS is set.

Each rule that is set must pass. The network rule reads the peer address of the TCP
connection, and refuses a request carrying X-Forwarded-For: one that came through nginx (or
another proxy) is not from the monitoring network, whatever its peer address is.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings


def scrape_allowed(*, authorization: str, peer: str, forwarded: bool) -> bool | None:
    """True to serve, False to refuse (403), None when metrics are off (404)."""
    token: str = settings.METRICS_TOKEN
    networks: list[str] = settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return None
    if token:
        sent = authorization.removeprefix("Bearer ").strip()
        if not sent or not hmac.compare_digest(sent.encode(), token.encode()):
            return False
    if networks:
        if forwarded:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if not any(address in ipaddress.ip_network(net, strict=False) for net in networks):
            return False
    return True
