"""Root images for tests: signed CernVM images in the layout real ones have (the disk, a 32 KiB JSON metadata
block and a 32 KiB JSON signature block, RSA PKCS#1 v1.5 over the SHA-256 of everything before it, both NUL
padded), and a real HTTP server on loopback that serves one with Last-Modified and If-Modified-Since."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

BLOCK = 32 * 1024


def _padded(fields: dict[str, str]) -> bytes:
    data = json.dumps(fields, indent=1).encode()
    assert len(data) <= BLOCK
    return data + b"\0" * (BLOCK - len(data))


def write_signed_image(path: Path, disk: bytes, cert_path: Path, key_path: Path) -> Path:
    """``path``: ``disk`` plus the metadata and signature blocks, signed with the key at ``key_path``."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signed = disk + _padded({"ucernvm-version": "4.7-test", "howto-verify": "see cernvm.cern.ch"})
    digest = hashlib.sha256(signed).digest()
    signature = key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    block = _padded({"certificate": base64.b64encode(cert_path.read_bytes()).decode(),
                     "signature": base64.b64encode(signature).decode(), "signer": "cvm-sign01.cern.ch"})
    path.write_bytes(signed + block)
    return path


class ImageServer:
    """Serves one file with Last-Modified and honours If-Modified-Since, counting full and 304 answers."""

    def __init__(self, path: Path, last_modified: bool = True) -> None:
        self.path, self.last_modified = path, last_modified
        self.full = self.not_modified = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/cernvm.hdd":
                    self.send_error(404)
                    return
                mtime = int(server.path.stat().st_mtime)
                since = self.headers.get("If-Modified-Since")
                if since and parsedate_to_datetime(since).timestamp() >= mtime:
                    server.not_modified += 1
                    self.send_response(304)
                    self.end_headers()
                    return
                data = server.path.read_bytes()
                server.full += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                if server.last_modified:
                    self.send_header("Last-Modified", formatdate(mtime, usegmt=True))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cernvm.hdd"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
