"""Root images, keypairs, boot volumes and credential expiry of the OpenStack connector, against the real
Keystone, Glance and Nova of scripts/openstack_testbed.py (files and URLs uploaded to the real Glance; the
URL served by a real HTTP server on loopback)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from contract import spec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from imagefiles import ImageServer, write_signed_image
from pki import PKI, grid_name
from test_openstack_contract import clean

from vcycle.connectors.openstack import MachinetypeOptions, OpenStackConnector, OpenStackSpace, make_connection
from vcycle.errors import LaunchRejected
from vcycle.testing import wait_for


@pytest.fixture
def project(openstack_testbed: Any) -> Iterator[Any]:
    clean(openstack_testbed)
    yield openstack_testbed
    clean(openstack_testbed)
    admin = openstack_testbed.connection(admin=True)
    for image in admin.image.images():
        if image.name.startswith("vcycle-"):
            admin.image.delete_image(image.id)


def connector(testbed: Any, tmp_path: Path, **options: Any) -> OpenStackConnector:
    return OpenStackConnector(testbed.connection(), "images", image_cache=tmp_path / "imagecache",
                              machinetypes={"mt": MachinetypeOptions(**options)},
                              signing_ca_dir=str(tmp_path / "ca"))


def ours(testbed: Any) -> list[Any]:
    return [i for i in testbed.connection(admin=True).image.images() if i.name.startswith("vcycle-")]


def server_image(testbed: Any, server_id: str) -> str:
    return str(testbed.connection(admin=True).compute.get_server(server_id).image["id"])


def test_a_local_file_is_uploaded_once_and_again_when_it_changes(project: Any, tmp_path: Path) -> None:
    disk = tmp_path / "cernvm4-micro.hdd"
    disk.write_bytes(os.urandom(70_000))
    os.utime(disk, (1_700_000_000, 1_700_000_000))
    first = connector(project, tmp_path)
    made = [first.create_machine(spec(f"images-a{i}", image=str(disk), flavor="m1.tiny")) for i in range(2)]
    (uploaded,) = ours(project)
    assert uploaded.status == "active" and uploaded.visibility == "private" and uploaded.disk_format == "raw"
    assert uploaded.properties["vcycle_source"] == str(disk)
    assert uploaded.properties["vcycle_last_modified"] == "1700000000"
    assert {server_image(project, m.id) for m in made} == {uploaded.id}
    restarted = connector(project, tmp_path)  # a new process finds the image in Glance: no second upload
    restarted.create_machine(spec("images-a2", image=str(disk), flavor="m1.tiny"))
    assert [i.id for i in ours(project)] == [uploaded.id]
    os.utime(disk, (1_700_000_500, 1_700_000_500))
    restarted.create_machine(spec("images-a3", image=str(disk), flavor="m1.tiny"))  # same cycle: not re-checked
    assert len(ours(project)) == 1
    restarted.list_machines()  # next cycle: the file's new version is uploaded
    newer = restarted.create_machine(spec("images-a4", image=str(disk), flavor="m1.tiny"))
    assert len(ours(project)) == 2 and server_image(project, newer.id) != uploaded.id


def test_a_url_is_fetched_with_if_modified_since_and_uploaded_once(project: Any, tmp_path: Path) -> None:
    source = tmp_path / "served.hdd"
    source.write_bytes(os.urandom(70_000))
    server = ImageServer(source)
    try:
        osc = connector(project, tmp_path)
        for cycle in range(3):
            osc.list_machines()
            osc.create_machine(spec(f"images-u{cycle}", image=server.url, flavor="m1.tiny"))
        assert (server.full, server.not_modified) == (1, 2)
        (uploaded,) = ours(project)
        assert uploaded.properties["vcycle_source"] == server.url and uploaded.size == 70_000
    finally:
        server.close()


def test_a_signed_image_is_used_only_when_its_signer_matches(project: Any, tmp_path: Path) -> None:
    pki = PKI.create(tmp_path / "ca")
    cert, key = pki.issue("signer", grid_name(("DC", "ch"), ("DC", "cern"), ("CN", "cvm-sign01.cern.ch")))
    disk = write_signed_image(tmp_path / "ucernvm.hdd", os.urandom(70_000), cert, key)
    refused = connector(project, tmp_path, cernvm_signing_dn="/CN=someone-else$")
    with pytest.raises(LaunchRejected, match="does not match cernvm_signing_dn"):
        refused.create_machine(spec("images-s0", image=str(disk), flavor="m1.tiny"))
    assert ours(project) == [] and refused.list_machines() == []  # nothing uploaded, nothing created
    trusted = connector(project, tmp_path, cernvm_signing_dn=r"^/DC=ch/DC=cern/CN=cvm-sign01\.cern\.ch$")
    made = trusted.create_machine(spec("images-s1", image=str(disk), flavor="m1.tiny"))
    assert server_image(project, made.id) == ours(project)[0].id


def test_root_public_key_becomes_a_keypair_of_the_servers(project: Any, tmp_path: Path) -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    key_file = tmp_path / "id_ed25519.pub"
    key_file.write_text(public + " admin@site\n")
    osc = connector(project, tmp_path, root_public_key=str(key_file))
    made = osc.create_machine(spec("images-k0", image="image:cernvm-test", flavor="m1.tiny"))
    admin = project.connection(admin=True)
    key_name = admin.compute.get_server(made.id).key_name
    assert key_name.startswith("vcycle-")
    user = project.connection()
    assert user.compute.get_keypair(key_name).public_key.split()[:2] == public.split()[:2]
    connector(project, tmp_path, root_public_key=str(key_file)).create_machine(
        spec("images-k1", image="image:cernvm-test", flavor="m1.tiny"))  # the existing keypair is reused
    assert [k.name for k in user.compute.keypairs()].count(key_name) == 1
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    with pytest.raises(LaunchRejected, match="not an ssh public key"):
        connector(project, tmp_path, root_public_key=str(bad)).create_machine(
            spec("images-k2", image="image:cernvm-test", flavor="m1.tiny"))
    user.compute.delete_keypair(key_name)


def test_volume_gb_per_processor_asks_nova_for_a_boot_volume(project: Any, tmp_path: Path) -> None:
    """The testbed has no Cinder: Nova takes the block device mapping, and its compute service then fails
    to create the volume. The fault says Nova asked for a volume of the requested size from our image."""
    osc = connector(project, tmp_path, volume_gb_per_processor=5)
    made = osc.create_machine(spec("images-v0", image="image:cernvm-test", flavor="m1.medium", processors=2))
    admin = project.connection(admin=True)
    wait_for(lambda: admin.compute.get_server(made.id).status in ("ERROR", "ACTIVE"), seconds=60)
    server = admin.compute.get_server(made.id)
    assert not server.image or not server.image.get("id")  # booted from a volume, not from the image itself
    fault = str((server.fault or {}).get("message", ""))
    assert server.status == "ERROR" and "olume" in fault, fault


def test_an_application_credential_about_to_expire_is_warned_about(project: Any, tmp_path: Path) -> None:
    user = project.connection()
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3, hours=1)
    cred = user.identity.create_application_credential(user=user.current_user_id, name="vcycle-expiring",
                                                       expires_at=expires.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    try:
        keys = {"url": project.keystone, "cred_id": cred.id, "cred_secret": cred.secret}
        osc = OpenStackConnector(make_connection(OpenStackSpace(**keys)), "expiry", credential_warning_days=14)
        assert osc.list_machines() == []  # the credential works
        (warning,) = osc.notices(datetime.now(UTC))
        assert "application credential" in warning and "expires at" in warning and "in 3 days" in warning
        assert OpenStackConnector(make_connection(OpenStackSpace(**keys)), "expiry", credential_warning_days=2).notices(
            datetime.now(UTC)) == []
        password = OpenStackConnector(make_connection(OpenStackSpace(**project.space_keys())), "expiry")
        assert password.notices(datetime.now(UTC)) == []  # the testbed's passwords never expire
        assert base64.b64decode(project.space_keys()["password_base64"])  # (the keys are the old vcycle's)
    finally:
        user.identity.delete_application_credential(user.current_user_id, cred.id)
