"""Container healthcheck: GET /healthz on the local Daphne; exit 0 when it answers 200.

Sends a Host header Django accepts (the first of DJANGO_ALLOWED_HOSTS), so the check passes
with a production ALLOWED_HOSTS that does not list 127.0.0.1. Standard library only.
"""

from __future__ import annotations

import http.client
import os
import sys


def allowed_host() -> str:
    hosts = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = hosts[0] if hosts else "localhost"
    if host == "*":
        return "localhost"
    return "healthcheck" + host if host.startswith(".") else host  # ".example.com" wildcard


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=4)
    try:
        conn.request("GET", "/healthz", headers={"Host": allowed_host()})
        status = conn.getresponse().status
    except OSError as exc:
        print(f"healthz: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if status != 200:
        print(f"healthz: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
