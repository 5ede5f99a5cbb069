"""A proxy to moto's EC2 that answers as EC2 itself does, for libcloud (tests and benchmarks/libcloud.py).

moto's server answers EC2's Query API with botocore's model namespace, ``http://ec2.amazonaws.com/doc/2016-11-15``,
on its answers and on its errors; EC2 itself sends answers in ``.../2016-11-15/`` (a trailing slash) and errors
in no namespace (``<Response><Errors><Error>``), and libcloud's parser (rightly) reads what EC2 sends. The proxy
puts EC2's namespaces back and changes nothing else.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MOTO_NAMESPACE = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15"'
EC2_NAMESPACE = b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'


@contextmanager
def ec2_as_ec2_says_it(moto_url: str) -> Iterator[str]:
    """HOST:PORT of a proxy to moto's server at ``moto_url`` that gives EC2's namespaces back."""
    target = urlsplit(moto_url)

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            upstream.request(self.command, self.path, body, {k: v for k, v in self.headers.items()
                                                             if k.lower() != "host"} | {"Host": target.netloc})
            answer = upstream.getresponse()
            data = answer.read()
            data = data.replace(b" " + MOTO_NAMESPACE, b"") if answer.status >= 400 else data.replace(
                MOTO_NAMESPACE, EC2_NAMESPACE)
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
