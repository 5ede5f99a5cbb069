"""A real, small OpenStack on this machine for vcycle's tests and benchmarks.

Keystone, Placement, Glance, the Neutron API and Nova (api, conductor,
scheduler, and two compute hosts with Nova's fake virt driver, one in the
zone ``zone-a`` and one in ``zone-b``), installed from PyPI into
their own virtualenv (``make openstack-testbed``, in ``.openstack/venv``), all
on SQLite, all on loopback ports chosen free at start, talking over the
RabbitMQ broker given to ``start`` (the tests start a private one,
scripts/services.py; exchanges of their own, so that two testbeds on one
broker never answer each other). ``start(directory, broker)``
writes their configuration, creates their databases, starts them, creates a
project ``vcycle`` with a member user, flavors and an image, and returns a
``Testbed``; ``stop()`` stops only what it started.

What it takes, learnt the hard way (see the OpenStack probe's report):
the services ship WSGI modules, not servers, so gunicorn serves them through
small shims that empty ``sys.argv`` (oslo.config would read gunicorn's flags);
several processes writing one SQLite file need ``BEGIN IMMEDIATE`` (a ``.pth``
hook in the testbed's virtualenv) or Nova's instance saves fail with
"database is locked"; Nova needs a network endpoint even for servers without
networks, so a real neutron-server runs (its schema created from the models,
as its migrations do not run on SQLite, and its mappers configured before the
first request); flavors are made by the admin.

    .venv/bin/python scripts/openstack_testbed.py DIR     (starts it, with a RabbitMQ of its own unless
                                                          TESTBED_BROKER=rabbit://... names one, and waits;
                                                          Ctrl-C stops it)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import services
import testbed_processes

from vcycle.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".openstack" / "venv"
# Each host in an aggregate zone of its own: a server asking for Nova's default zone ("nova") may land on any
# host, as Nova's placement pre-filter cannot narrow the default zone to hosts in no aggregate.
ZONES = {"zone-a": "", "zone-b": "-b"}  # zone -> suffix of its compute host's name
SERVICE_PASSWORD = "testbed-service"
ADMIN_PASSWORD = "testbed-admin"
USER_PASSWORD = "testbed-user"

HOOK = '''
import os

def _begin_immediate():
    if os.environ.get("TESTBED_SQLITE_IMMEDIATE") != "1":
        return
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return

    @event.listens_for(Engine, "connect")
    def connect(dbapi_connection, record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            dbapi_connection.isolation_level = None

    @event.listens_for(Engine, "begin")
    def begin(connection):
        if connection.dialect.name == "sqlite" and "in_transaction" not in connection.info:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            connection.info["in_transaction"] = True

    @event.listens_for(Engine, "commit")
    @event.listens_for(Engine, "rollback")
    def end(connection):
        connection.info.pop("in_transaction", None)

_begin_immediate()
'''


class TestbedUnavailable(Exception):
    """The testbed cannot run here; the message says why."""


def unavailable_reason() -> str | None:
    """Why the testbed cannot start here, or None."""
    if not (VENV / "bin" / "nova-compute").exists():
        return f"the OpenStack services are not installed in {VENV} (make openstack-testbed)"
    return None


@dataclass
class Testbed:
    directory: Path
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    image_id: str = ""
    mysql: str | None = None  # USER@HOST:PORT of the MariaDB holding Nova's and Placement's databases
    broker: str = ""  # rabbit://USER:PASSWORD@HOST:PORT/ of the message bus
    own: list[services.Service] = field(default_factory=list)  # services started for this testbed alone

    @property
    def keystone(self) -> str:
        return f"http://127.0.0.1:{self.ports['keystone']}/v3"

    @property
    def clouds_yaml(self) -> Path:
        return self.directory / "clouds.yaml"

    def space_keys(self) -> dict[str, str]:
        """The old vcycle's keys for the member user's project."""
        import base64

        return {"url": self.keystone, "project_name": "vcycle", "domain_name": "Default", "username": "vcycle",
                "password_base64": base64.b64encode(USER_PASSWORD.encode()).decode()}

    def connection(self, admin: bool = False):  # type: ignore[no-untyped-def]
        import openstack
        from openstack.config import OpenStackConfig

        loader = OpenStackConfig(config_files=[str(self.clouds_yaml)], load_envvars=False)
        return openstack.connection.Connection(config=loader.get_one(cloud="testbed-admin" if admin else "testbed"))

    def stop(self) -> None:
        """Stop what start() started: SIGTERM, then SIGKILL (nova-compute sometimes ignores SIGTERM); drop the
        MariaDB databases it made on a server not its own; stop the services it started for itself."""
        testbed_processes.stop(self.processes)  # the Nova services first, Keystone last; gunicorn's workers too
        if self.mysql and not any(service.url == self.mysql for service in self.own):
            _mysql(self, ";".join(f"DROP DATABASE IF EXISTS {_mysql_name(self.ports, n)}" for n in MYSQL_DATABASES))
        while self.own:
            self.own.pop().stop()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def _authtoken(keystone: str, user: str) -> str:
    return f"""
        [keystone_authtoken]
        www_authenticate_uri = {keystone}
        auth_url = {keystone}
        auth_type = password
        project_domain_name = Default
        user_domain_name = Default
        project_name = service
        username = {user}
        password = {SERVICE_PASSWORD}
        service_token_roles_required = true
        """


def _client(keystone: str, user: str) -> str:
    return f"""
        auth_type = password
        auth_url = {keystone}/v3
        project_domain_name = Default
        user_domain_name = Default
        project_name = service
        username = {user}
        password = {SERVICE_PASSWORD}
        region_name = RegionOne
        valid_interfaces = public
        """


MYSQL_DATABASES = ("placement", "nova", "nova_api", "nova_cell0")


def _mysql_name(ports: dict[str, int], name: str) -> str:
    return f"testbed{ports['nova']}_{name}"


def _configure(d: Path, ports: dict[str, int], broker: str, mysql: str | None = None) -> None:
    data, logs = d / "data", d / "logs"
    for sub in ("nova/instances", "nova/locks", "glance/images", "glance/staging", "glance/tasks", "glance/locks",
                "neutron/locks"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    for service in ("keystone", "placement", "glance", "nova", "neutron"):
        (d / "etc" / service).mkdir(parents=True, exist_ok=True)
    keystone = f"http://127.0.0.1:{ports['keystone']}"
    rabbit = broker
    db = {name: f"sqlite:///{data}/{name}.sqlite?timeout=60" for name in (
        "keystone", "placement", "glance", "nova", "nova_api", "nova_cell0", "neutron")}
    if mysql:  # Nova's and Placement's many writers on a real database server instead of SQLite's one lock
        db.update({name: f"mysql+pymysql://{mysql}/{_mysql_name(ports, name)}?charset=utf8"
                   for name in MYSQL_DATABASES})
    _write(d / "etc/keystone/keystone.conf", f"""
        [DEFAULT]
        log_file = {logs}/keystone.log
        [database]
        connection = {db['keystone']}
        [token]
        provider = fernet
        [fernet_tokens]
        key_repository = {data}/fernet-keys
        [fernet_receipts]
        key_repository = {data}/fernet-keys
        [credential]
        key_repository = {data}/credential-keys
        """)
    _write(d / "etc/placement/placement.conf", f"""
        [DEFAULT]
        log_file = {logs}/placement.log
        [placement_database]
        connection = {db['placement']}
        [api]
        auth_strategy = keystone
        """ + _authtoken(keystone, "placement"))
    shutil.copy(VENV / "etc/glance/glance-api-paste.ini", d / "etc/glance/glance-api-paste.ini")
    _write(d / "etc/glance/glance-api.conf", f"""
        [DEFAULT]
        log_file = {logs}/glance.log
        enabled_backends = fs:file
        [database]
        connection = {db['glance']}
        [glance_store]
        default_backend = fs
        [fs]
        filesystem_store_datadir = {data}/glance/images
        [os_glance_staging_store]
        filesystem_store_datadir = {data}/glance/staging
        [os_glance_tasks_store]
        filesystem_store_datadir = {data}/glance/tasks
        [oslo_concurrency]
        lock_path = {data}/glance/locks
        [paste_deploy]
        flavor = keystone
        config_file = {d}/etc/glance/glance-api-paste.ini
        """ + _authtoken(keystone, "glance"))
    shutil.copy(VENV / "etc/nova/api-paste.ini", d / "etc/nova/api-paste.ini")
    _write(d / "etc/nova/nova.conf", f"""
        [DEFAULT]
        log_dir = {logs}
        state_path = {data}/nova
        instances_path = {data}/nova/instances
        transport_url = {rabbit}
        control_exchange = nova-testbed-{ports['nova']}
        compute_driver = fake.FakeDriver
        concurrency_backend = threading
        host = testbed-{ports['nova']}
        my_ip = 127.0.0.1
        [api]
        auth_strategy = keystone
        [wsgi]
        api_paste_config = {d}/etc/nova/api-paste.ini
        [api_database]
        connection = {db['nova_api']}
        [database]
        connection = {db['nova']}
        [conductor]
        workers = 1
        [scheduler]
        workers = 1
        discover_hosts_in_cells_interval = 2
        [oslo_concurrency]
        lock_path = {data}/nova/locks
        [oslo_messaging_notifications]
        driver = noop
        [vnc]
        enabled = false
        [spice]
        enabled = false
        [serial_console]
        enabled = false
        [glance]
        valid_interfaces = public
        region_name = RegionOne
        [placement]
        """ + _client(keystone, "nova") + """
        [neutron]
        """ + _client(keystone, "neutron") + """
        [service_user]
        send_service_user_token = true
        """ + _client(keystone, "nova") + _authtoken(keystone, "nova"))
    (data / "nova-b/instances").mkdir(parents=True, exist_ok=True)
    _write(d / "etc/nova/compute-b.conf", f"""
        [DEFAULT]
        host = testbed-{ports['nova']}-b
        log_file = {logs}/nova-compute-b.log
        state_path = {data}/nova-b
        instances_path = {data}/nova-b/instances
        """)  # a second compute host (its own node identity), put in availability zone zone-b
    shutil.copy(VENV / "etc/neutron/api-paste.ini", d / "etc/neutron/api-paste.ini")
    _write(d / "etc/neutron/neutron.conf", f"""
        [DEFAULT]
        log_file = {logs}/neutron.log
        core_plugin = ml2
        service_plugins =
        auth_strategy = keystone
        transport_url = {rabbit}
        control_exchange = neutron-testbed-{ports['neutron']}
        notify_nova_on_port_status_changes = false
        notify_nova_on_port_data_changes = false
        api_paste_config = {d}/etc/neutron/api-paste.ini
        state_path = {data}/neutron
        [database]
        connection = {db['neutron']}
        [oslo_concurrency]
        lock_path = {data}/neutron/locks
        [ml2]
        type_drivers = flat
        tenant_network_types =
        mechanism_drivers =
        extension_drivers = port_security
        [ml2_type_flat]
        flat_networks = *
        """ + _authtoken(keystone, "neutron"))
    shims = d / "wsgi"
    shims.mkdir(exist_ok=True)
    for name, module in (("keystone_app", "keystone.wsgi.api"), ("placement_app", "placement.wsgi.api"),
                         ("glance_app", "glance.wsgi.api"), ("nova_app", "nova.wsgi.osapi_compute")):
        (shims / f"{name}.py").write_text(f"import sys\nsys.argv = sys.argv[:1]\nfrom {module} import application\n")
    (shims / "neutron_app.py").write_text(
        f"import sys\nsys.argv = sys.argv[:1] + ['--config-file', {str(d / 'etc/neutron/neutron.conf')!r}]\n"
        "import neutron.db.migration.models.head\nimport sqlalchemy.orm\nsqlalchemy.orm.configure_mappers()\n"
        "from neutron.wsgi.api import application\n")
    _write(d / "clouds.yaml", f"""
        clouds:
          testbed-admin:
            auth: {{auth_url: "{keystone}/v3", username: admin, password: "{ADMIN_PASSWORD}", project_name: admin,
                   user_domain_name: Default, project_domain_name: Default}}
            region_name: RegionOne
            identity_api_version: 3
          testbed:
            auth: {{auth_url: "{keystone}/v3", username: vcycle, password: "{USER_PASSWORD}", project_name: vcycle,
                   user_domain_name: Default, project_domain_name: Default}}
            region_name: RegionOne
            identity_api_version: 3
        """)


def _run(d: Path, *command: str, env: dict[str, str] | None = None) -> None:
    with open(d / "logs" / "setup.log", "a") as log:
        done = subprocess.run([str(VENV / "bin" / command[0]), *command[1:]], stdout=log, stderr=log,
                              env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(d / "clouds.yaml"), **(env or {})},
                              cwd=d)
    if done.returncode != 0:
        raise TestbedUnavailable(f"{' '.join(command[:3])} failed; see {d}/logs/setup.log")


def _mysql(testbed: Testbed, statement: str) -> None:
    assert testbed.mysql is not None
    user, _, where = testbed.mysql.partition("@")
    host, _, port = where.partition(":")
    _run(testbed.directory, "python", "-c", "import pymysql, sys\n"
         "c = pymysql.connect(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3])\n"
         "[c.cursor().execute(s) for s in sys.argv[4].split(';') if s]", host, port or "3306", user, statement)


def _databases(d: Path, cell0: str) -> None:
    etc, data = d / "etc", d / "data"
    keystone = ["--config-file", str(etc / "keystone/keystone.conf")]
    _run(d, "keystone-manage", *keystone, "db_sync")
    for what in ("fernet_setup", "credential_setup"):
        _run(d, "keystone-manage", *keystone, what, "--keystone-user", "root", "--keystone-group", "root")
    _run(d, "placement-manage", "--config-file", str(etc / "placement/placement.conf"), "db", "sync")
    _run(d, "glance-manage", "--config-file", str(etc / "glance/glance-api.conf"), "db_sync")
    nova = ["--config-file", str(etc / "nova/nova.conf")]
    _run(d, "nova-manage", *nova, "api_db", "sync")
    _run(d, "nova-manage", *nova, "cell_v2", "map_cell0", "--database_connection", cell0)
    _run(d, "nova-manage", *nova, "cell_v2", "create_cell", "--name", "cell1")
    _run(d, "nova-manage", *nova, "db", "sync")
    _run(d, "python", "-c", "import sqlalchemy, sys\nfrom neutron.db.migration.models import head\n"
         "head.get_metadata().create_all(sqlalchemy.create_engine(sys.argv[1]))", f"sqlite:///{data}/neutron.sqlite")
    _run(d, "neutron-db-manage", "--config-file", str(etc / "neutron/neutron.conf"), "stamp", "heads")
    import sqlite3

    for path in data.glob("*.sqlite"):
        sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()


def _start(testbed: Testbed, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
    testbed_processes.start(testbed.processes, testbed.directory / "logs", name, command, cwd=testbed.directory,
                            env={**os.environ, "TESTBED_SQLITE_IMMEDIATE": "1", **(env or {})})


def _gunicorn(testbed: Testbed, name: str, app: str, env: dict[str, str] | None = None) -> None:
    _start(testbed, name, [str(VENV / "bin/gunicorn"), "--bind", f"127.0.0.1:{testbed.ports[name]}", "--workers",
                           "1", "--threads", "8", "--timeout", "180", "--no-control-socket", "--pythonpath",
                           str(testbed.directory / "wsgi"), f"{app}:application"], env)


def _wait_http(url: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.25)
    raise TestbedUnavailable(f"{url} did not answer within {seconds:.0f}s")


def _bootstrap(testbed: Testbed) -> None:
    d, ports = testbed.directory, testbed.ports
    code = f"""
import json, time, openstack
c = openstack.connect(cloud="testbed-admin")
idn = c.identity
domain = idn.find_domain("default")
role = lambda name: idn.find_role(name) or idn.create_role(name=name)
admin, member, service_role, reader = role("admin"), role("member"), role("service"), role("reader")
service = idn.create_project(name="service", domain_id=domain.id)
project = idn.create_project(name="vcycle", domain_id=domain.id)
for name in ("nova", "glance", "placement", "neutron"):
    user = idn.create_user(name=name, password={SERVICE_PASSWORD!r}, domain_id=domain.id)
    idn.assign_project_role_to_user(service, user, admin)
    idn.assign_project_role_to_user(service, user, service_role)
user = idn.create_user(name="vcycle", password={USER_PASSWORD!r}, domain_id=domain.id)
idn.assign_project_role_to_user(project, user, member)
idn.assign_project_role_to_user(project, user, reader)
for name, kind, port, path in (("nova", "compute", {ports['nova']}, "/v2.1"), ("placement", "placement",
        {ports['placement']}, ""), ("glance", "image", {ports['glance']}, ""), ("neutron", "network",
        {ports['neutron']}, "")):
    s = idn.create_service(name=name, type=kind)
    for interface in ("public", "internal", "admin"):
        idn.create_endpoint(service_id=s.id, interface=interface, url=f"http://127.0.0.1:{{port}}{{path}}",
                            region_id="RegionOne")
print("bootstrapped", flush=True)
"""
    _run(d, "keystone-manage", "--config-file", str(d / "etc/keystone/keystone.conf"), "bootstrap",
         "--bootstrap-password", ADMIN_PASSWORD, "--bootstrap-username", "admin", "--bootstrap-project-name",
         "admin", "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
         "--bootstrap-region-id", "RegionOne", *[f"--bootstrap-{k}-url={testbed.keystone}/" for k in (
             "admin", "internal", "public")])
    _gunicorn(testbed, "keystone", "keystone_app", {"OS_KEYSTONE_CONFIG_DIR": str(d / "etc/keystone")})
    _wait_http(testbed.keystone)
    _run(d, "python", "-c", code)


def _finish(testbed: Testbed) -> None:
    code = """
import json, time, openstack
c = openstack.connect(cloud="testbed-admin")
for name, ram, vcpus, disk in (("m1.tiny", 512, 1, 1), ("m1.small", 2048, 1, 20), ("m1.medium", 4096, 2, 40),
                               ("m1.large", 8192, 4, 80)):
    c.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)
image = c.image.create_image(name="cernvm-test", data=b"\\0" * 65536, disk_format="raw", container_format="bare",
                             visibility="public")
started = time.monotonic()
while time.monotonic() - started < 240:
    up = [s for s in c.compute.services() if s.binary == "nova-compute" and s.state == "up"]
    if len(up) == 2 and len(list(c.compute.hypervisors())) == 2 and len(list(c.placement.resource_providers())) == 2:
        break
    time.sleep(1)
else:
    raise SystemExit("nova-compute did not come up")
print(json.dumps({"image": image.id}))
"""
    out = testbed.directory / "logs" / "finish.json"
    with open(out, "w") as stream:
        done = subprocess.run([str(VENV / "bin/python"), "-c", code], stdout=stream, cwd=testbed.directory,
                              stderr=open(testbed.directory / "logs" / "setup.log", "a"),
                              env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(testbed.clouds_yaml)})
    if done.returncode != 0:
        raise TestbedUnavailable(f"flavors, image or compute host not ready; see {testbed.directory}/logs")
    testbed.image_id = json.loads(out.read_text())["image"]
    _run(testbed.directory, "nova-manage", "--config-file", str(testbed.directory / "etc/nova/nova.conf"),
         "cell_v2", "discover_hosts")
    zone = f"""
import openstack
c = openstack.connect(cloud="testbed-admin")
for zone, suffix in {ZONES!r}.items():
    aggregate = c.compute.create_aggregate(name=zone, availability_zone=zone)
    c.compute.add_host_to_aggregate(aggregate, "testbed-{testbed.ports['nova']}" + suffix)
"""
    _run(testbed.directory, "python", "-c", zone)


def start(directory: Path, broker: str, mysql: str | None = None) -> Testbed:
    """Start the testbed in ``directory`` (made empty first), on the RabbitMQ at ``broker``
    (``rabbit://USER:PASSWORD@HOST:PORT/``). TestbedUnavailable says why it cannot.

    ``mysql`` (USER@HOST:PORT, no password) puts Nova's and Placement's databases on that MariaDB.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise TestbedUnavailable(reason)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    ports = {name: free_port() for name in ("keystone", "placement", "glance", "nova", "neutron")}
    testbed = Testbed(directory, ports, mysql=mysql, broker=broker)
    purelib = subprocess.run([str(VENV / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "vcycle_testbed_sqlite.py").write_text(HOOK)
    Path(purelib, "vcycle_testbed_sqlite.pth").write_text("import vcycle_testbed_sqlite\n")
    _configure(directory, ports, broker, mysql)
    try:
        if mysql:
            _mysql(testbed, ";".join(f"CREATE DATABASE {_mysql_name(ports, n)} CHARACTER SET utf8"
                                     for n in MYSQL_DATABASES))
            cell0 = f"mysql+pymysql://{mysql}/{_mysql_name(ports, 'nova_cell0')}?charset=utf8"
        else:
            cell0 = f"sqlite:///{directory}/data/nova_cell0.sqlite?timeout=60"
        _databases(directory, cell0)
        _bootstrap(testbed)
        etc = directory / "etc"
        _gunicorn(testbed, "placement", "placement_app", {"OS_PLACEMENT_CONFIG_DIR": str(etc / "placement")})
        _gunicorn(testbed, "glance", "glance_app", {"OS_GLANCE_CONFIG_DIR": str(etc / "glance")})
        _gunicorn(testbed, "nova", "nova_app", {"OS_NOVA_CONFIG_DIR": str(etc / "nova")})
        _gunicorn(testbed, "neutron", "neutron_app")
        for service in ("nova-conductor", "nova-scheduler", "nova-compute"):
            _start(testbed, service, [str(VENV / "bin" / service), "--config-file", str(etc / "nova/nova.conf")])
        _start(testbed, "nova-compute-b", [str(VENV / "bin/nova-compute"), "--config-file", str(etc / "nova/nova.conf"),
                                           "--config-file", str(etc / "nova/compute-b.conf")])
        for name in ("placement", "glance", "nova", "neutron"):
            _wait_http(f"http://127.0.0.1:{ports[name]}/")
        _finish(testbed)
    except BaseException:
        testbed.stop()
        raise
    (directory / "testbed.json").write_text(json.dumps({"ports": ports, "image_id": testbed.image_id,
                                                       "mysql": mysql, "broker": broker}))
    return testbed


def start_with_broker(directory: Path, broker: str | None, mysql: str | None = None) -> Testbed:
    """``start`` on ``broker``, or, without one, on a private RabbitMQ started here and stopped with the testbed."""
    if broker:
        return start(directory, broker, mysql)
    bus = services.rabbitmq(directory.parent / f"{directory.name}-rabbitmq")
    try:
        testbed = start(directory, bus.url, mysql)
    except BaseException:
        bus.stop()
        raise
    testbed.own.append(bus)
    return testbed


def attach(directory: Path) -> Testbed:
    """A testbed already running in ``directory`` (started by ``main``), to test against while developing:
    VCYCLE_OPENSTACK_TESTBED=DIR makes the test session use it instead of starting its own."""
    found = json.loads((directory / "testbed.json").read_text())
    return Testbed(directory, found["ports"], image_id=found["image_id"], mysql=found.get("mysql"),
                   broker=found.get("broker", ""))


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / ".openstack" / "run").resolve()
    started = time.monotonic()
    testbed = start_with_broker(directory, os.environ.get("TESTBED_BROKER"), mysql=os.environ.get("TESTBED_MYSQL"))
    print(f"OpenStack up in {time.monotonic() - started:.0f}s: {testbed.keystone}, clouds.yaml {testbed.clouds_yaml}")
    testbed_processes.serve_until_signal(testbed.stop)


if __name__ == "__main__":
    main()
