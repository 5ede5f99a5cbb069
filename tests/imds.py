"""A local stand-in for the instance metadata services the shipped templates watch for interruption notices.

It answers on the paths, with the headers and bodies AWS and Microsoft document (no real one can run here):

- EC2's IMDSv2: ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1-21600) gives a
  token, required as ``X-aws-ec2-metadata-token`` on every GET (401 without); ``GET
  /latest/meta-data/spot/instance-action`` is 404 until a notice is due, then its JSON
  (``{"action": "terminate", "time": ...}``); the rebalance recommendation path stays 404.
- Azure's Scheduled Events: ``GET /metadata/scheduledevents?api-version=...`` needs ``Metadata: true`` (400
  without) and answers a document ``{"DocumentIncarnation": N, "Events": [...]}``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "AQAEAFTJrEs-imds-token"
AZURE_PREEMPT = {"EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123", "EventType": "Preempt",
                 "ResourceType": "VirtualMachine", "Resources": ["vcycle-mt-golden0001"], "EventStatus": "Scheduled",
                 "NotBefore": "Thu, 01 Jan 2026 14:00:30 GMT", "Description": "", "EventSource": "Platform",
                 "DurationInSeconds": -1}


class Metadata:
    """One metadata service (``cloud`` ``ec2`` or ``azure``) on a loopback port, in a thread."""

    def __init__(self, cloud: str) -> None:
        self.cloud = cloud
        self.notice: dict[str, Any] | None = None
        self.gets: list[str] = []
        self.noticed = threading.Event()  # set once the notice was answered to a GET
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                service.put(self)

            def do_GET(self) -> None:
                service.get(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def give_notice(self, notice: dict[str, Any]) -> None:
        self.notice = notice

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", kind: str = "text/plain") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def put(self, h: BaseHTTPRequestHandler) -> None:
        if self.cloud != "ec2" or h.path != "/latest/api/token":
            return self._answer(h, 404 if self.cloud == "ec2" else 400)
        ttl = h.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self._answer(h, 400)
        return self._answer(h, 200, TOKEN.encode())

    def get(self, h: BaseHTTPRequestHandler) -> None:
        self.gets.append(h.path)
        notice = self.notice
        if self.cloud == "ec2":
            if not h.path.startswith("/latest/"):
                return self._answer(h, 404)
            if h.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                return self._answer(h, 401)
            if h.path == "/latest/meta-data/spot/instance-action" and notice is not None:
                self.noticed.set()
                return self._answer(h, 200, json.dumps(notice).encode(), "application/json")
            return self._answer(h, 404, b'<?xml version="1.0"?><title>404 - Not Found</title>', "text/html")
        if not h.path.startswith("/metadata/scheduledevents?api-version="):
            return self._answer(h, 404)
        if h.headers.get("Metadata") != "true":
            return self._answer(h, 400, b'{"error": "Bad request. Required metadata header not specified"}',
                                "application/json")
        if notice is not None:
            self.noticed.set()
        document = {"DocumentIncarnation": 1 if notice else 0, "Events": [notice] if notice else []}
        return self._answer(h, 200, json.dumps(document).encode(), "application/json")
