"""The private servers the tests start (scripts/services.py): real PostgreSQL, RabbitMQ and MariaDB from
Debian's packages, each answering its own protocol on a port of its own, side by side with another of its
kind, and leaving nothing behind when stopped."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import services
from sqlalchemy import create_engine, text
from vctest import unavailable


def _start(kind: str, where: Path) -> services.Service:
    try:
        return services.STARTERS[kind](where)
    except services.ServiceUnavailable as exc:
        unavailable(kind, str(exc))
        raise


def _gone(service: services.Service, ports: dict[str, int]) -> None:
    assert service.leftovers() == []
    assert not any(services.listening(port) for port in ports.values())
    assert not service.directory.exists()


def test_two_postgresql_servers_run_side_by_side_and_stop_without_a_trace(tmp_path: Path) -> None:
    first, second = _start("postgresql", tmp_path / "a"), _start("postgresql", tmp_path / "b")
    try:
        assert first.ports != second.ports and first.directory != second.directory
        for service in (first, second):
            engine = create_engine(service.url)
            with engine.connect() as c:
                assert c.execute(text("select current_setting('port')")).scalar() == str(service.ports["postgresql"])
            engine.dispose()
    finally:
        ports = [dict(first.ports), dict(second.ports)]
        first.stop()
        second.stop()
    _gone(first, ports[0])
    _gone(second, ports[1])


def test_two_mariadb_servers_answer_root_over_tcp_and_stop_without_a_trace(tmp_path: Path) -> None:
    first = _start("mariadb", tmp_path / "a")
    second = services.mariadb(tmp_path / "b", users={"someone": "pw"})
    try:
        for service, user, password in ((first, "root", ""), (second, "someone", "pw")):
            done = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{service.ports['mariadb']}", f"-u{user}",
                                   f"-p{password}" if password else "--skip-password", "-N", "-e", "SELECT @@port"],
                                  capture_output=True, text=True, timeout=30)
            assert done.stdout.strip() == str(service.ports["mariadb"]), done.stderr
    finally:
        ports = [dict(first.ports), dict(second.ports)]
        first.stop()
        second.stop()
    _gone(first, ports[0])
    _gone(second, ports[1])


def test_a_rabbitmq_broker_speaks_amqp_on_its_own_ports_and_stops_with_its_epmd(tmp_path: Path) -> None:
    broker = _start("rabbitmq", tmp_path)
    try:
        assert broker.ports["epmd"] != 4369  # never the system's epmd
        with socket.create_connection(("127.0.0.1", broker.ports["amqp"]), timeout=10) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
        assert frame[:1] == b"\x01" and frame[1:3] == b"\x00\x00"  # a method frame on channel 0: Connection.Start
    finally:
        ports = dict(broker.ports)
        broker.stop()
    _gone(broker, ports)


def test_a_service_that_leaves_a_port_answering_fails_its_stop(tmp_path: Path) -> None:
    """The check behind 'nothing is left running' can fail: a port still answering after stop is reported."""
    with socket.socket() as stray:
        stray.bind(("127.0.0.1", 0))
        stray.listen()
        port = stray.getsockname()[1]
        service = services.Service("stray", tmp_path / "stray", {"listener": port}, "none://")
        (tmp_path / "stray").mkdir()
        with pytest.raises(services.ServiceLeft, match=f"port {port}"):
            service.stop(wait=0.5)
