"""Root images given as a local file or an http(s) URL: fetched, cached, and their CernVM signature checked.

The old vcycle's rules, kept: a URL is fetched into a cache directory with
``If-Modified-Since`` set to the cached copy's mtime; the server must send
``Last-Modified``, which becomes the copy's mtime (so a wrong local clock
never causes a fetch per cycle); a local file's version is its mtime. When
the server cannot be reached, a cached copy is used and said so.

A CernVM image ends with two 32 KiB blocks, NUL padded: JSON metadata, then
a JSON signature block whose ``signature`` (base64) is an RSA PKCS#1 v1.5
SHA-256 signature of everything before that last block, made with the key of
its ``certificate`` (base64 of a PEM or DER certificate). The certificate
must chain to a CA of the grid CA directory, be valid now, and have a DN
matching ``cernvm_signing_dn`` (a regular expression, as before).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

from vcycle.errors import ImageError

log = logging.getLogger(__name__)

BLOCK = 32 * 1024
CA_DIR = "/etc/grid-security/certificates"
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A root image on this host, and the version it is (its mtime or the server's Last-Modified)."""

    source: str
    path: Path
    last_modified: int

    @property
    def version(self) -> str:
        """A short name for this source at this version: the old vcycle's hash, shortened."""
        digest = hashlib.sha256(f"{self.last_modified} {self.source}".encode()).digest()
        return base64.b32encode(digest).decode().lower().rstrip("=")[:20]

    @property
    def disk_format(self) -> str:
        name = self.source.rsplit("/", 1)[-1].lower()
        for suffix, fmt in ((".iso", "iso"), (".qcow2", "qcow2"), (".vmdk", "vmdk"), (".vhd", "vhd"),
                            (".vdi", "vdi")):
            if name.endswith(suffix):
                return fmt
        return "raw"  # CernVM's .hdd images, and the old vcycle's default


def is_file_or_url(root_image: str) -> bool:
    """Whether ``root_image`` names a local file or a URL (rather than an image already in the cloud)."""
    return root_image.startswith(("/", "http://", "https://", "file://"))


def local_image(source: str, cache_dir: Path, *, timeout: float = 120.0, verify: bool | str = True) -> ImageFile:
    """The image ``source`` names, fetched into ``cache_dir`` first if it is a URL. Raises ImageError."""
    if source.startswith(("http://", "https://")):
        return _fetch(source, cache_dir, timeout, verify)
    path = Path(source.removeprefix("file://"))
    try:
        stat = path.stat()
    except OSError as exc:
        raise ImageError(f"root_image {source}: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise ImageError(f"root_image {source}: not a file")
    return ImageFile(source, path, int(stat.st_mtime))


def _fetch(url: str, cache_dir: Path, timeout: float, verify: bool | str) -> ImageFile:
    import requests

    cached = cache_dir / quote(url, safe="")
    headers = {"User-Agent": "vcycle"}
    if cached.exists():
        headers["If-Modified-Since"] = formatdate(cached.stat().st_mtime, usegmt=True)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with requests.get(url, headers=headers, stream=True, timeout=timeout, verify=verify) as answer:
            if answer.status_code == 304 and cached.exists():
                log.debug("root image %s not modified; cached copy %s used", url, cached)
                return ImageFile(url, cached, int(cached.stat().st_mtime))
            if answer.status_code != 200:
                raise ImageError(f"root_image {url}: HTTP {answer.status_code} {answer.reason}")
            modified = answer.headers.get("Last-Modified")
            if not modified:  # as before: a server that cannot say when its image changed is not used
                raise ImageError(f"root_image {url}: the server sent no Last-Modified header")
            try:
                stamp = parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError) as exc:
                raise ImageError(f"root_image {url}: bad Last-Modified {modified!r}") from exc
            handle, temporary = tempfile.mkstemp(prefix=".fetch-", dir=cache_dir)
            try:
                with os.fdopen(handle, "wb") as out:
                    for chunk in answer.iter_content(_CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.utime(temporary, (time.time(), stamp))
                os.replace(temporary, cached)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
    except (requests.RequestException, OSError) as exc:
        if cached.exists():
            log.warning("root image %s could not be checked for a new version (%s); the cached copy is used",
                        url, exc)
            return ImageFile(url, cached, int(cached.stat().st_mtime))
        raise ImageError(f"root_image {url}: cannot fetch it: {exc}") from exc
    log.info("root image %s fetched (Last-Modified %s) into %s", url, modified, cached)
    return ImageFile(url, cached, int(stamp))


# --- CernVM signatures ----------------------------------------------------------------------

def cernvm_signer(path: Path, ca_dir: str, now: datetime) -> str:
    """The slash-form DN that signed the CernVM image at ``path``, once signature and chain are verified.

    Raises ImageError saying what failed.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    size = path.stat().st_size
    if size <= 2 * BLOCK:
        raise ImageError(f"{path} is {size} bytes: too small to be a signed CernVM image")
    digest = hashlib.sha256()
    with open(path, "rb") as image:
        left = size - BLOCK
        while left:
            chunk = image.read(min(_CHUNK, left))
            if not chunk:
                raise ImageError(f"{path} changed while being read")
            digest.update(chunk)
            left -= len(chunk)
        block = image.read(BLOCK).rstrip(b"\0")
    try:
        fields = _signature_fields(block)
        signature = base64.b64decode(fields["signature"])
        certificate = _certificate(base64.b64decode(fields["certificate"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ImageError(f"{path} has no readable CernVM signature block ({exc})") from exc
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ImageError(f"{path}: the signing certificate's key is not RSA")
    try:
        key.verify(signature, digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except InvalidSignature:
        raise ImageError(f"{path}: the signature does not match the image (altered or truncated?)") from None
    _verify_chain(certificate, ca_dir, now)
    return slash_dn(certificate.subject)


def _signature_fields(block: bytes) -> dict:  # type: ignore[type-arg]
    try:
        return dict(json.loads(block))
    except ValueError:
        # Some CernVM images were published with commas missing in this block; the old vcycle mended them so.
        mended = block.replace(b'signature>"\n', b'signature>",\n').replace(b'cvm-sign01.cern.ch"\n',
                                                                            b'cvm-sign01.cern.ch",\n')
        return dict(json.loads(mended))


def check_signed(image: ImageFile, pattern: str, ca_dir: str, now: datetime) -> str:
    """Verify ``image``'s CernVM signature and that its signer's DN matches ``pattern``; the DN."""
    signer = cernvm_signer(image.path, ca_dir, now)
    if re.search(pattern, signer) is None:
        raise ImageError(f"root_image {image.source} is signed by {signer}, which does not match "
                         f"cernvm_signing_dn = {pattern}")
    log.info("root image %s: signature verified, signed by %s", image.source, signer)
    return signer


def _certificate(data: bytes):  # type: ignore[no-untyped-def]
    from cryptography import x509

    return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)


def slash_dn(name) -> str:  # type: ignore[no-untyped-def]
    """A cryptography ``x509.Name`` in the grid's slash form (most significant part first)."""
    from cryptography.x509.oid import NameOID

    parts = []
    for rdn in name.rdns:
        parts.append("+".join(
            f"{'emailAddress' if a.oid == NameOID.EMAIL_ADDRESS else a.rfc4514_attribute_name}={a.value}"
            for a in rdn))
    return "".join("/" + part for part in parts)


def _ca_certificates(ca_dir: str) -> list:  # type: ignore[type-arg]
    from cryptography import x509

    found = []
    try:
        names = sorted(os.listdir(ca_dir))
    except OSError as exc:
        raise ImageError(f"cannot read the CA directory {ca_dir}: {exc.strerror or exc}") from exc
    for name in names:
        if not (name.endswith((".pem", ".crt")) or re.fullmatch(r"[0-9a-f]{8}\.[0-9]+", name)):
            continue
        try:
            found.extend(x509.load_pem_x509_certificates(Path(ca_dir, name).read_bytes()))
        except (OSError, ValueError):
            continue  # CRLs, signing policies and other files live there too
    return found


def _verify_chain(certificate, ca_dir: str, now: datetime) -> None:  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    cas = _ca_certificates(ca_dir)
    current = certificate
    for _ in range(10):
        if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
            valid = f"{current.not_valid_before_utc:%Y-%m-%d} to {current.not_valid_after_utc:%Y-%m-%d}"
            raise ImageError(f"certificate {slash_dn(current.subject)} is not valid now (valid {valid})")
        issuer = None
        for candidate in cas:
            if candidate.subject != current.issuer:
                continue
            try:
                constraints = candidate.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                continue
            if not constraints.ca:
                continue
            try:
                current.verify_directly_issued_by(candidate)
            except (InvalidSignature, ValueError, TypeError):  # not this CA's signature, or another key type
                continue
            issuer = candidate
            break
        if issuer is None:
            raise ImageError(f"certificate {slash_dn(current.subject)} is not issued by a CA in {ca_dir}")
        if issuer.subject == issuer.issuer:
            if not issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc:
                raise ImageError(f"CA {slash_dn(issuer.subject)} is not valid now")
            return
        current = issuer
    raise ImageError(f"certificate chain of {slash_dn(certificate.subject)} is too long")
