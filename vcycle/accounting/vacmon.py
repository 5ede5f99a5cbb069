"""VacMon messages over UDP, in the fields the old vcycle sent (VacQuery 01.02).

Each cycle, for a space with ``vacmon_hostport``: one ``factory_status``
message (the space as a factory: running machines and processors, the
manager host's disks, memory and load) and one ``machinetype_status`` per
machinetype; and one ``machine_status`` message for each machine that ended,
when it is accounted. Every listener gets every message, one JSON object per
datagram. A listener that cannot be reached costs a log line, never the
cycle: UDP is fire and forget, as VacMon expects.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vcycle import __version__
from vcycle.accounting.apel import site_name
from vcycle.core.model import MachineRecord
from vcycle.core.sections import SpaceConfig
from vcycle.core.states import WORKING_STATES, MachineState
from vcycle.core.usage import Usage

log = logging.getLogger(__name__)
VACQUERY_VERSION = "01.02"  # as the old vcycle's shared.py, which had to match Vac's

# The old vcycle's words for a machine's state.
STATE_WORDS: Mapping[MachineState, str] = {
    MachineState.REQUESTED: "Starting", MachineState.STARTING: "Starting", MachineState.RUNNING: "Running",
    MachineState.DRAINING: "Running", MachineState.STOPPED: "Shut down", MachineState.FAILED: "Failed",
    MachineState.DELETING: "Deleting", MachineState.DELETE_FAILED: "Deleting", MachineState.GONE: "Shut down",
    MachineState.CREATE_FAILED: "Failed",
}


@dataclass(frozen=True, slots=True)
class Host:
    """The manager host's figures in a factory message."""

    name: str
    kernel: str = ""
    os_issue: str = ""
    boot_time: int = 0
    load_average: float = 0.0
    root_disk_avail_kb: int = 0
    root_disk_avail_inodes: int = 0
    daemon_disk_avail_kb: int = 0
    daemon_disk_avail_inodes: int = 0
    mem_total_kb: int = 0
    mem_used_kb: int = 0
    swap_free_kb: int = 0
    swap_used_kb: int = 0


def _common(kind: str, space: SpaceConfig, host: str, now: datetime) -> dict[str, Any]:
    return {"message_type": kind, "daemon_version": f"Vcycle {__version__} vcycled",
            "vacquery_version": f"VacQuery {VACQUERY_VERSION}", "cookie": "0", "space": space.name,
            "site": site_name(space), "factory": host, "time_sent": int(now.timestamp())}


def _running(records: Iterable[MachineRecord]) -> list[MachineRecord]:
    return [r for r in records if r.state in WORKING_STATES]


def factory_message(space: SpaceConfig, records: Sequence[MachineRecord], host: Host, now: datetime,
                    mjf_heartbeat_at: datetime | None = None) -> dict[str, Any]:
    """The space as a factory: what runs in it, and the manager host's state."""
    running = _running(records)
    message = {
        **_common("factory_status", space, host.name, now),
        "running_processors": sum(r.processors for r in running), "running_machines": len(running),
        "max_processors": space.processors_limit, "max_machines": space.processors_limit,
        "root_disk_avail_kb": host.root_disk_avail_kb, "root_disk_avail_inodes": host.root_disk_avail_inodes,
        "daemon_disk_avail_kb": host.daemon_disk_avail_kb,
        "daemon_disk_avail_inodes": host.daemon_disk_avail_inodes,
        "load_average": host.load_average, "kernel_version": host.kernel, "os_issue": host.os_issue,
        "boot_time": host.boot_time, "factory_heartbeat_time": int(now.timestamp()),
        "mjf_heartbeat_time": int(mjf_heartbeat_at.timestamp()) if mjf_heartbeat_at else 0,
        "metadata_heartbeat_time": int(mjf_heartbeat_at.timestamp()) if mjf_heartbeat_at else 0,
        "swap_used_kb": host.swap_used_kb, "swap_free_kb": host.swap_free_kb, "mem_used_kb": host.mem_used_kb,
        "mem_total_kb": host.mem_total_kb,
    }
    if any(mt.hs06_per_processor is not None for mt in space.machinetypes.values()):
        hs06 = sum(r.hs06 or 0.0 for r in running)
        message["max_hs06"] = hs06  # as the old vcycle: the running HS06 in both
        message["running_hs06"] = hs06
    return message


def machinetype_messages(space: SpaceConfig, records: Sequence[MachineRecord], host: Host,
                         now: datetime) -> list[dict[str, Any]]:
    """One message per machinetype of the space, in name order."""
    running = _running(records)
    found = []
    for name, mt in sorted(space.machinetypes.items()):
        mine = [r for r in running if r.machinetype == name]
        message = {**_common("machinetype_status", space, host.name, now),
                   "num_machinetypes": len(space.machinetypes), "machinetype": name,
                   "bytes_per_processor": mt.mb_per_processor * 1024 * 1024, "running_machines": len(mine),
                   "running_processors": sum(r.processors for r in mine),
                   "max_wallclock_seconds": mt.max_wallclock_seconds}
        if mt.accounting_fqan:
            message["fqan"] = mt.accounting_fqan
        if mt.hs06_per_processor is not None:
            message["running_hs06"] = sum(r.hs06 or 0.0 for r in mine)
        if mt.max_processors is not None:
            message["max_processors"] = mt.max_processors
        found.append(message)
    return found


def machine_message(space: SpaceConfig, record: MachineRecord, used: Usage | None, host: Host,
                    now: datetime) -> dict[str, Any]:
    """A machine that ended: its times, processors and shutdown message."""
    mt = space.machinetypes.get(record.machinetype)
    started = record.started_at
    cpu = used.cpu_seconds if used is not None else (
        int((record.stopped_at - started).total_seconds()) if started and record.stopped_at else 0)
    message = {**_common("machine_status", space, host.name, now), "num_machines": 1, "machine": record.name,
               "state": STATE_WORDS[record.state], "uuid": record.cloud_id or record.request_id,
               "created_time": int(record.created_at.timestamp()),
               "started_time": int(started.timestamp()) if started else None,
               "heartbeat_time": int(record.heartbeat_at.timestamp()) if record.heartbeat_at else None,
               "num_processors": record.processors, "cpu_seconds": max(cpu, 0), "cpu_percentage": 100.0,
               "machinetype": record.machinetype}
    if record.hs06 is not None:
        message["hs06"] = record.hs06
    if mt is not None and mt.accounting_fqan:
        message["fqan"] = mt.accounting_fqan
    if record.shutdown_code is not None:
        message["shutdown_message"] = f"{record.shutdown_code} {record.shutdown_text or ''}".strip()
        message["shutdown_time"] = int(record.stopped_at.timestamp()) if record.stopped_at else None
    return message


def host(name: str, state_dir: str) -> Host:
    """This host's figures, read from /proc and the file systems; what cannot be read is 0 or empty."""
    root, daemon = _disk("/tmp"), _disk(state_dir)
    memory = _meminfo()
    total, free, swap = memory.get("MemTotal", 0), memory.get("MemFree", 0), memory.get("SwapTotal", 0)
    try:
        load = os.getloadavg()[2]
    except OSError:
        load = 0.0
    return Host(name=name, kernel=os.uname().release, os_issue=_first_line("/etc/issue.vac", "/etc/issue"),
                boot_time=_boot_time(), load_average=load, root_disk_avail_kb=root[0],
                root_disk_avail_inodes=root[1], daemon_disk_avail_kb=daemon[0], daemon_disk_avail_inodes=daemon[1],
                mem_total_kb=total, mem_used_kb=total - free, swap_free_kb=memory.get("SwapFree", 0),
                swap_used_kb=swap - memory.get("SwapFree", 0))


def _disk(path: str) -> tuple[int, int]:
    try:
        found = os.statvfs(path)
    except OSError:
        return 0, 0
    return found.f_bavail * found.f_frsize // 1024, found.f_favail


def _meminfo() -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                figure = value.split()
                if figure and figure[0].isdigit():
                    found[key.strip()] = int(figure[0])
    except OSError:
        pass  # not Linux: the memory figures are 0
    return found


def _boot_time() -> int:
    try:
        with open("/proc/uptime", encoding="ascii") as uptime:
            return int(datetime.now().timestamp() - float(uptime.read().split()[0]))
    except (OSError, ValueError, IndexError):
        return 0


def _first_line(*paths: str) -> str:
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.readline().strip()
        except OSError:
            continue
    return os.uname().release


def send(messages: Sequence[Mapping[str, Any]], listeners: Sequence[tuple[str, int]], space: str) -> int:
    """Each message to each listener as one datagram; how many datagrams left this host."""
    if not messages or not listeners:
        return 0
    sent = 0
    payloads = [json.dumps(m, sort_keys=True).encode("utf-8") for m in messages]
    for hostname, port in listeners:
        try:
            address = socket.getaddrinfo(hostname, port, type=socket.SOCK_DGRAM)[0]
        except OSError as exc:
            log.warning("space=%s VacMon listener %s:%d not found: %s", space, hostname, port, exc)
            continue
        with socket.socket(address[0], socket.SOCK_DGRAM) as sock:
            for payload in payloads:
                try:
                    sock.sendto(payload, address[4])
                    sent += 1
                except OSError as exc:
                    log.warning("space=%s VacMon message to %s:%d not sent: %s", space, hostname, port, exc)
                    break
    return sent
