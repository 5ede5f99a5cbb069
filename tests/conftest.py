"""Session-wide fixtures: the real peers the tests run against, each started once per test session.

moto's server for EC2; private PostgreSQL and RabbitMQ servers (scripts/services.py: their own data
directories and free loopback ports, stopped at the end); the OpenStack, DIRAC, Kubernetes and Slurm testbeds. Each
starts only when a selected test needs it. Where one cannot start, its tests skip and say why, except under
CI=true, where they fail. VCYCLE_TEST_POSTGRES_URL and VCYCLE_TEST_RABBITMQ_URL point the tests at servers
of one's own instead (they are then used, never stopped).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from vctest import unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

# A VM form of a shipped template run here (a test playing the machine) starts the hard end: a timer that powers
# the machine off past its shutdown time. Here it must never power off this host: it runs this harmless command
# instead, and every timer still waiting is stopped at the end of the session.
POWEROFF = "true vcycle-tests-poweroff"
os.environ["VCYCLE_POWEROFF"] = POWEROFF


@pytest.fixture(scope="session", autouse=True)
def _hard_ends() -> Iterator[None]:
    yield
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and POWEROFF.encode() in (entry / "cmdline").read_bytes():
                os.killpg(int(entry.name), signal.SIGKILL)  # the timer leads its own session (setsid)
        except (OSError, ProcessLookupError):
            pass


def _service(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import services

    try:
        service = services.STARTERS[kind](tmp_path_factory.mktemp(kind))
    except services.ServiceUnavailable as exc:
        unavailable(kind, str(exc))
    yield service
    service.stop()  # raises ServiceLeft, failing the session's teardown, if anything of it survived


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The admin URL of a real PostgreSQL: VCYCLE_TEST_POSTGRES_URL, or a private server for this session."""
    given = os.environ.get("VCYCLE_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    for service in _service("postgresql", tmp_path_factory):
        yield service.url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"vcycle_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        unavailable("PostgreSQL", f"{make_url(postgres_server).render_as_string()}: {str(exc.orig).splitlines()[0]}")
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def rabbitmq_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real RabbitMQ broker: VCYCLE_TEST_RABBITMQ_URL, or a private one for this session."""
    given = os.environ.get("VCYCLE_TEST_RABBITMQ_URL")
    if given:
        yield given
        return
    for service in _service("rabbitmq", tmp_path_factory):
        yield service.url


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


def _testbed(name: str, what: str, start: Callable[[Any], Any]) -> Iterator[Any]:
    """The testbed of scripts/NAME.py: one started by hand where VCYCLE_<NAME>=DIR says so (used, never stopped),
    else one ``start(module)`` starts, stopped at the end; where it cannot start, unavailable (skip, or fail
    under CI=true) with its reason."""
    module = importlib.import_module(name)
    running = os.environ.get(f"VCYCLE_{name.upper()}")
    if running:
        yield module.attach(Path(running))
        return
    reason = module.unavailable_reason()
    if reason is not None:
        unavailable(what, reason)
    testbed = start(module)
    yield testbed
    testbed.stop()


@pytest.fixture(scope="session")
def openstack_testbed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[object]:
    """A real OpenStack on this machine (scripts/openstack_testbed.py) on the session's RabbitMQ, started once
    per test session. VCYCLE_OPENSTACK_TESTBED=DIR uses one started by hand."""
    yield from _testbed("openstack_testbed", "real OpenStack", lambda module: module.start(
        tmp_path_factory.mktemp("openstack"), request.getfixturevalue("rabbitmq_url")))


@pytest.fixture(scope="session")
def dirac_testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real DIRAC 9 WMS on this machine (scripts/dirac_testbed.py), started once per test session (not
    installed: make dirac-testbed). VCYCLE_DIRAC_TESTBED=DIR uses one started by hand."""
    yield from _testbed("dirac_testbed", "real DIRAC", lambda module: module.start(tmp_path_factory.mktemp("dirac")))


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[Any]:
    """A fresh fake Azure Resource Manager and Entra ID token endpoint over real TLS (tests/fakearm.py)."""
    import fakearm

    yield from fakearm.serve(tmp_path / "arm")


@pytest.fixture(scope="session")
def kubernetes_testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real Kubernetes control plane on this machine (scripts/kubernetes_testbed.py: etcd, kube-apiserver,
    kube-controller-manager, kube-scheduler and kwok), started once per test session (not built: make
    kubernetes-testbed). VCYCLE_KUBERNETES_TESTBED=DIR uses one started by hand."""
    yield from _testbed("kubernetes_testbed", "real Kubernetes",
                        lambda module: module.start(tmp_path_factory.mktemp("kubernetes")))


@pytest.fixture(scope="session")
def slurm_testbed() -> Iterator[object]:
    """A real Slurm 22.05 cluster on this machine (scripts/slurm_testbed.py: munged, slurmctld, slurmds; Debian's
    packages: make services), started once per test session. VCYCLE_SLURM_TESTBED=DIR uses one started by
    hand."""
    yield from _testbed("slurm_testbed", "real Slurm", lambda module: module.start())


@pytest.fixture(scope="session")
def dirac_python() -> str:
    """A Python with DIRAC 9 and vcycle installed (make dirac-testbed), for the tests that need DIRAC but no
    DIRAC server. Without it they skip and say why, except under CI=true, where they fail."""
    python = Path(__file__).resolve().parents[1] / ".dirac" / "venv" / "bin" / "python"
    if not python.exists():
        unavailable("DIRAC", f"DIRAC is not installed in {python.parents[1]} (make dirac-testbed)")
    return str(python)
