"""X.509 proxies in user-data, checked with openssl's own verification."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from test_render import SHUTDOWN, render, site

from vcycle.errors import RenderError
from vcycle.userdata.proxy import PROXY_CERT_INFO, signed_by

NOW = datetime.now(UTC)


def name(*cns: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
                      x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
                      *[x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]])


def issue(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name, signer: rsa.RSAPrivateKey, ca: bool,
          not_after: datetime) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                        critical=True)
    return builder.sign(signer, hashes.SHA256())


def pem(thing: x509.Certificate | rsa.RSAPrivateKey) -> bytes:
    if isinstance(thing, x509.Certificate):
        return thing.public_bytes(serialization.Encoding.PEM)
    return thing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())


def grid(tmp_path: Path, expires: datetime = NOW + timedelta(days=365), legacy: bool = False,
         mismatched: bool = False) -> tuple[str, Path]:
    """A CA and a robot certificate in the machinetype's directory; the rendered proxy and the CA file."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = issue(name("Test CA"), ca_key, name("Test CA"), ca_key, True, NOW + timedelta(days=3650))
    user_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    user = issue(name("robot", "vcycle pilot"), user_key, ca.subject, ca_key, False, expires)
    extra = "user_data_proxy = true\n" + ("legacy_proxy = true\n" if legacy else "")
    config = site(tmp_path, "proxy.sh", extra)
    directory = tmp_path / "spaces/sp.example.org/machinetypes/mt"
    template = "#!/bin/sh\ncat > /tmp/x509up <<'EOF'\n##user_data_option_x509_proxy##EOF\n"
    (directory / "files/proxy.sh").write_text(template)
    (directory / "x509cert.pem").write_bytes(pem(user))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048) if mismatched else user_key
    (directory / "x509key.pem").write_bytes(pem(other))
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    return render(config), tmp_path / "ca.pem"


def blocks(text: str) -> list[str]:
    return re.findall(r"-----BEGIN [A-Z ]+-----\n.*?-----END [A-Z ]+-----\n", text, re.S)


def test_rfc3820_proxy_passes_openssl_verify(tmp_path: Path) -> None:
    text, ca = grid(tmp_path)
    proxy, key, user = blocks(text)
    assert "RSA PRIVATE KEY" in key
    for index, block in enumerate((proxy, user)):
        (tmp_path / f"{index}.pem").write_text(block)
    done = subprocess.run(["openssl", "verify", "-allow_proxy_certs", "-CAfile", str(ca), "-untrusted",
                           str(tmp_path / "1.pem"), str(tmp_path / "0.pem")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr
    certificate = x509.load_pem_x509_certificate(proxy.encode())
    extension = certificate.extensions.get_extension_for_oid(PROXY_CERT_INFO)
    assert extension.critical
    assert certificate.not_valid_after_utc == SHUTDOWN  # until the machine's shutdown time
    assert certificate.issuer == x509.load_pem_x509_certificate(user.encode()).subject


def test_proxy_never_outlives_the_certificate(tmp_path: Path) -> None:
    end = (NOW + timedelta(days=10)).replace(microsecond=0)
    text, _ = grid(tmp_path, expires=end)
    assert x509.load_pem_x509_certificate(blocks(text)[0].encode()).not_valid_after_utc == end


def test_legacy_proxy_has_the_globus_form(tmp_path: Path) -> None:
    text, _ = grid(tmp_path, legacy=True)
    proxy = x509.load_pem_x509_certificate(blocks(text)[0].encode())
    user = x509.load_pem_x509_certificate(blocks(text)[2].encode())
    assert proxy.subject.rfc4514_string().startswith("CN=limited proxy,")
    assert PROXY_CERT_INFO not in [e.oid for e in proxy.extensions]
    assert signed_by(proxy, user)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"expires": NOW - timedelta(hours=1)}, "certificate expired"),
    ({"mismatched": True}, "does not match the certificate"),
])
def test_bad_credentials_are_a_clear_error(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        grid(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_missing_credentials_are_a_clear_error(tmp_path: Path) -> None:
    config = site(tmp_path, "pilot-container", "user_data_proxy = true\n")
    with pytest.raises(RenderError, match=r"cannot read .*x509cert\.pem"):
        render(config)
