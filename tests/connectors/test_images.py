"""Root images from files and URLs (connectors/images.py): the If-Modified-Since cache against a real HTTP
server on loopback, and CernVM signatures checked against a throwaway grid CA."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imagefiles import ImageServer, write_signed_image
from pki import PKI, grid_name

from vcycle.connectors import images
from vcycle.errors import LaunchRejected

NOW = datetime.now(UTC)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ImageServer]:
    source = tmp_path / "served.hdd"
    source.write_bytes(b"version one" * 1000)
    os.utime(source, (1_700_000_000, 1_700_000_000))
    server = ImageServer(source)
    yield server
    server.close()


def test_a_url_is_fetched_once_then_revalidated_with_if_modified_since(served: ImageServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = images.local_image(served.url, cache)
    assert first.path.read_bytes() == b"version one" * 1000 and first.last_modified == 1_700_000_000
    assert int(first.path.stat().st_mtime) == 1_700_000_000  # the server's time, not this host's clock
    again = images.local_image(served.url, cache)
    assert (served.full, served.not_modified) == (1, 1) and again == first
    served.path.write_bytes(b"version two" * 1000)
    os.utime(served.path, (1_700_000_100, 1_700_000_100))
    newer = images.local_image(served.url, cache)
    assert served.full == 2 and newer.last_modified == 1_700_000_100 and newer.version != first.version
    assert newer.path.read_bytes().startswith(b"version two")
    assert [p.name for p in cache.iterdir()] == [first.path.name]  # no temporary files left behind


def test_an_unreachable_server_falls_back_to_the_cached_copy_or_refuses(served: ImageServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetched = images.local_image(served.url, cache)
    served.close()
    assert images.local_image(served.url, cache, timeout=5) == fetched
    with pytest.raises(LaunchRejected, match="cannot fetch it"):
        images.local_image(served.url, tmp_path / "empty-cache", timeout=5)


def test_a_server_without_last_modified_or_a_missing_image_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "x.hdd"
    source.write_bytes(b"x" * 10)
    server = ImageServer(source, last_modified=False)
    try:
        with pytest.raises(images.ImageError, match="no Last-Modified"):
            images.local_image(server.url, tmp_path / "cache")
        with pytest.raises(images.ImageError, match="HTTP 404"):
            images.local_image(server.url.replace("cernvm.hdd", "other.hdd"), tmp_path / "cache")
    finally:
        server.close()
    assert not list((tmp_path / "cache").iterdir())


def test_a_local_file_is_versioned_by_its_mtime(tmp_path: Path) -> None:
    path = tmp_path / "cernvm4.iso"
    path.write_bytes(b"iso")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    image = images.local_image(str(path), tmp_path / "cache")
    assert (image.path, image.last_modified, image.disk_format) == (path, 1_600_000_000, "iso")
    os.utime(path, (1_600_000_001, 1_600_000_001))
    assert images.local_image(str(path), tmp_path / "cache").version != image.version
    with pytest.raises(images.ImageError, match="No such file"):
        images.local_image(str(tmp_path / "missing.hdd"), tmp_path / "cache")
    assert images.is_file_or_url(str(path)) and images.is_file_or_url("https://x/y.hdd")
    assert not images.is_file_or_url("image:cernvm") and not images.is_file_or_url("3f1a-uuid")


# --- CernVM signatures -------------------------------------------------------------------

SIGNER = grid_name(("DC", "ch"), ("DC", "cern"), ("OU", "computers"), ("CN", "cvm-sign01.cern.ch"))


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI.create(tmp_path / "ca")


@pytest.fixture
def signed(pki: PKI, tmp_path: Path) -> images.ImageFile:
    cert, key = pki.issue("signer", SIGNER)
    path = write_signed_image(tmp_path / "ucernvm.hdd", os.urandom(100_000), cert, key)
    return images.local_image(str(path), tmp_path / "cache")


def test_a_signed_image_names_its_signer(signed: images.ImageFile, pki: PKI) -> None:
    ca_dir = str(pki.directory)
    assert images.cernvm_signer(signed.path, ca_dir, NOW) == "/DC=ch/DC=cern/OU=computers/CN=cvm-sign01.cern.ch"
    assert images.check_signed(signed, r"^/DC=ch/DC=cern/.*/CN=cvm-sign01\.cern\.ch$", ca_dir, NOW)
    with pytest.raises(images.ImageError, match="does not match cernvm_signing_dn"):
        images.check_signed(signed, "/CN=someone-else", ca_dir, NOW)


def test_an_altered_image_fails_its_signature(signed: images.ImageFile, pki: PKI) -> None:
    data = bytearray(signed.path.read_bytes())
    data[500] ^= 0xFF
    signed.path.write_bytes(bytes(data))
    with pytest.raises(images.ImageError, match="signature does not match"):
        images.cernvm_signer(signed.path, str(pki.directory), NOW)


def test_a_signer_from_an_unknown_ca_or_out_of_date_is_refused(signed: images.ImageFile, tmp_path: Path,
                                                               pki: PKI) -> None:
    other = PKI.create(tmp_path / "other-ca")
    (other.directory / "signer.pem").unlink(missing_ok=True)
    with pytest.raises(images.ImageError, match="not issued by a CA in"):
        images.cernvm_signer(signed.path, str(other.directory), NOW)
    with pytest.raises(images.ImageError, match="is not valid now"):
        images.cernvm_signer(signed.path, str(pki.directory), NOW + timedelta(days=20))
    with pytest.raises(images.ImageError, match="cannot read the CA directory"):
        images.cernvm_signer(signed.path, str(tmp_path / "nowhere"), NOW)


def test_an_unsigned_image_is_refused(tmp_path: Path, pki: PKI) -> None:
    plain = tmp_path / "plain.hdd"
    plain.write_bytes(b"\0" * 200_000)
    with pytest.raises(images.ImageError, match="no readable CernVM signature block"):
        images.cernvm_signer(plain, str(pki.directory), NOW)
    small = tmp_path / "small.hdd"
    small.write_bytes(b"x" * 1000)
    with pytest.raises(images.ImageError, match="too small"):
        images.cernvm_signer(small, str(pki.directory), NOW)
