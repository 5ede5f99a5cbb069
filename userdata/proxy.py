"""X.509 proxies for user-data: RFC 3820 limited proxies, or legacy Globus ones.

A machinetype with ``user_data_proxy = true`` keeps a certificate and its
key in ``x509cert.pem`` and ``x509key.pem`` in its directory (the two may be
one file), as in the original vcycle. Each machine gets a new key pair and a
proxy certificate signed by that key, valid until the machine's shutdown
time (never beyond the certificate's own end), as one PEM document: proxy
certificate, proxy key, then the signing certificate. ``legacy_proxy =
true`` makes the old Globus form (no ProxyCertInfo, subject ending
``CN=limited proxy``).
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from vcycle.core.sections import MachinetypeConfig
from vcycle.errors import RenderError

PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")  # RFC 3820
LIMITED_PROXY_POLICY = "1.3.6.1.4.1.3536.1.1.1.9"  # Globus "limited proxy" policy language
KEY_BITS = 2048
BACKDATE = timedelta(minutes=5)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for value in parts[2:]:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, body)


def proxy_cert_info(policy_language: str = LIMITED_PROXY_POLICY) -> bytes:
    """DER of ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage OID } }."""
    return _der(0x30, _der(0x30, _der_oid(policy_language)))


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def load_credentials(mt: MachinetypeConfig) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The machinetype's certificate and key; RenderError naming what is wrong."""
    paths = [os.path.join(mt.directory, name) for name in ("x509cert.pem", "x509key.pem")]
    try:
        texts = [_read(path) for path in paths]
    except OSError as exc:
        raise RenderError(f"user_data_proxy: cannot read {exc.filename}: {exc.strerror}") from exc
    try:
        certificate = x509.load_pem_x509_certificate(texts[0])
    except ValueError as exc:
        raise RenderError(f"user_data_proxy: {paths[0]} holds no PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(texts[1], password=None)
    except (ValueError, TypeError) as exc:
        raise RenderError(f"user_data_proxy: {paths[1]} holds no unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise RenderError(f"user_data_proxy: {paths[1]} is not an RSA key")
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
        raise RenderError(f"user_data_proxy: the key in {paths[1]} does not match the certificate in {paths[0]}")
    return certificate, key


def make_proxy(certificate: x509.Certificate, key: rsa.RSAPrivateKey, until: datetime, now: datetime,
               legacy: bool = False) -> bytes:
    """PEM: proxy certificate, its new private key, the signing certificate."""
    if certificate.not_valid_after_utc <= now:
        raise RenderError(f"user_data_proxy: the certificate expired at "
                          f"{certificate.not_valid_after_utc.isoformat()}")
    not_after = min(until, certificate.not_valid_after_utc)
    proxy_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    serial = secrets.randbits(62) + 1
    last = "limited proxy" if legacy else str(serial)
    subject = x509.Name([*certificate.subject.rdns, x509.RelativeDistinguishedName(
        [x509.NameAttribute(NameOID.COMMON_NAME, last)])])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(certificate.subject)
               .public_key(proxy_key.public_key()).serial_number(serial)
               .not_valid_before(max(now - BACKDATE, certificate.not_valid_before_utc)).not_valid_after(not_after)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False),
                              critical=True))
    if not legacy:
        builder = builder.add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO, proxy_cert_info()),
                                        critical=True)
    proxy = builder.sign(key, hashes.SHA256())
    return b"".join([
        proxy.public_bytes(serialization.Encoding.PEM),
        proxy_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()),
        certificate.public_bytes(serialization.Encoding.PEM),
    ])


def proxy_for(mt: MachinetypeConfig, until: datetime, now: datetime | None = None) -> str:
    """A new proxy for one machine of ``mt``, valid until ``until``."""
    certificate, key = load_credentials(mt)
    return make_proxy(certificate, key, until, now or datetime.now(UTC),
                      legacy=mt.legacy_proxy).decode()


def signed_by(proxy: x509.Certificate, certificate: x509.Certificate) -> bool:
    """Whether ``proxy`` carries a valid signature of ``certificate``'s key."""
    public = certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(proxy.signature, proxy.tbs_certificate_bytes, padding.PKCS1v15(),
                      proxy.signature_hash_algorithm or hashes.SHA256())
    except InvalidSignature:
        return False
    return True
