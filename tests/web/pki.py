"""A throwaway grid PKI for the TLS tests: a CA, a server certificate for 127.0.0.1, user certificates."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vcycle.userdata.proxy import make_proxy

NOW = datetime.now(UTC)


def grid_name(*parts: tuple[str, str]) -> x509.Name:
    oids = {"DC": NameOID.DOMAIN_COMPONENT, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in parts])


def _pem(thing: x509.Certificate | rsa.RSAPrivateKey) -> bytes:
    if isinstance(thing, x509.Certificate):
        return thing.public_bytes(serialization.Encoding.PEM)
    return thing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())


@dataclass
class PKI:
    directory: Path
    ca: x509.Certificate
    ca_key: rsa.RSAPrivateKey

    @classmethod
    def create(cls, directory: Path) -> PKI:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = grid_name(("DC", "org"), ("DC", "example"), ("CN", "Test Grid CA"))
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
              .not_valid_after(NOW + timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
              .sign(key, hashes.SHA256()))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.pem").write_bytes(_pem(ca))
        return cls(directory, ca, key)

    def issue(self, name: str, subject: x509.Name, *, server: bool = False) -> tuple[Path, Path]:
        """A certificate and key signed by the CA, as PEM files (cert, key)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=10))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                  critical=True))
        if server:
            builder = (builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                            critical=False)
        certificate = builder.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_path.write_bytes(_pem(certificate))
        key_path.write_bytes(_pem(key))
        key_path.chmod(0o600)
        return cert_path, key_path

    def proxy(self, name: str, cert_path: Path, key_path: Path) -> Path:
        """An RFC 3820 proxy of a user certificate: one PEM with proxy, its key and the user certificate."""
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        path = self.directory / f"{name}.pem"
        path.write_bytes(make_proxy(certificate, key, NOW + timedelta(hours=12), NOW))
        return path
