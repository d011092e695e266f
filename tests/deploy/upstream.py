"""A plain HTTP server on loopback for nginx's tests, standing where a Daphne replica stands (the
part under test is nginx, not the replica): it answers what a replica would, by path.

- a path containing `/upstream-502`: a 502 of its own, in the REST shape, with its own
  `x-request-id` (a replica's `provider_failed`), which nginx must pass on untouched;
- a path containing `/die`: the connection closed before any answer (a replica that died
  while holding the request);
- anything else: 200 and, as JSON, the X-Request-ID nginx passed on.

    python -m tests.deploy.upstream PORT
"""

from __future__ import annotations

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if "/die" in self.path:
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if "/upstream-502" in self.path:
            status, request_id = 502, "from-the-replica"
            body: dict[str, Any] = {
                "error": {"code": "provider_failed", "detail": "The replica's own 502."}
            }
        else:
            status, request_id = 200, self.headers.get("X-Request-ID", "")
            body = {"request_id": request_id}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if request_id:
            self.send_header("x-request-id", request_id)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.requestline}\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
