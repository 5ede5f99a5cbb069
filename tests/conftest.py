"""Session-wide fixtures: a real moto server over HTTP for the EC2 tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's server on a free loopback port, validating AMIs and instance types as EC2 does."""
    os.environ.setdefault("MOTO_ENABLE_AMI_VALIDATION", "true")
    os.environ.setdefault("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def moto_ami(moto_url: str) -> str:
    """An AMI that moto's EC2 knows (one of its stock images)."""
    import boto3

    client = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    images = client.describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"]
    return str((images or client.describe_images()["Images"])[0]["ImageId"])


@pytest.fixture(scope="session")
def openstack_testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real OpenStack on this machine (scripts/openstack_testbed.py), started once per test session.

    Where it cannot start (not installed: make openstack-testbed; no RabbitMQ), the tests using it skip and
    say why, except under CI=true, where they fail.
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import openstack_testbed

    reason = openstack_testbed.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the OpenStack testbed must run under CI: {reason}")
        pytest.skip(f"no real OpenStack here: {reason}")
    running = os.environ.get("VCYCLE_OPENSTACK_TESTBED")
    if running:  # one started by hand (scripts/openstack_testbed.py DIR): used, never stopped
        yield openstack_testbed.attach(Path(running))
        return
    testbed = openstack_testbed.start(tmp_path_factory.mktemp("openstack"))
    yield testbed
    testbed.stop()


@pytest.fixture(scope="session")
def dirac_testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real DIRAC 9 WMS on this machine (scripts/dirac_testbed.py), started once per test session.

    Where it cannot start (not installed: make dirac-testbed), the tests using it skip and say why, except
    under CI=true, where they fail. VCYCLE_DIRAC_TESTBED=DIR uses one started by hand.
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import dirac_testbed

    running = os.environ.get("VCYCLE_DIRAC_TESTBED")
    if running:
        yield dirac_testbed.attach(Path(running))
        return
    reason = dirac_testbed.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the DIRAC testbed must run under CI: {reason}")
        pytest.skip(f"no real DIRAC here: {reason}")
    testbed = dirac_testbed.start(tmp_path_factory.mktemp("dirac"))
    yield testbed
    testbed.stop()


@pytest.fixture(scope="session")
def dirac_python() -> str:
    """A Python with DIRAC 9 and vcycle installed (make dirac-testbed), for the tests that need DIRAC but no
    DIRAC server. Without it they skip and say why, except under CI=true, where they fail."""
    from pathlib import Path

    python = Path(__file__).resolve().parents[1] / ".dirac" / "venv" / "bin" / "python"
    if not python.exists():
        reason = f"DIRAC is not installed in {python.parents[1]} (make dirac-testbed)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"DIRAC must be installed under CI: {reason}")
        pytest.skip(reason)
    return str(python)
