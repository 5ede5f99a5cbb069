"""The core's configuration: each key of ``[settings]``, ``[space]``, ``[machinetype]``, ``[demand]``, declared once.

Each key is a field made with ``options.key`` (parser, default, one line of
doc); its meaning and default follow the original vcycle (vcycle.conf(5),
docs/vcycle-compat.md). The same classes are the typed configuration the
rest of vcycle reads: the loader (vcycle/config/load.py) builds them from
the files. A connector adds its own keys to its spaces and machinetypes, and
a demand source to its section and to the machinetypes that name it, in
typed objects of their own declaration (``SpaceConfig.connector``,
``MachinetypeConfig.connector``, ``MachinetypeConfig.source``,
``DemandConfig.options``).

Pure: declarations and values only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vcycle.core.model import CAPACITY_TYPES, Offering
from vcycle.core.options import (
    REQUIRED,
    Budget,
    boolean,
    budget,
    host_port,
    host_ports,
    integer,
    key,
    matching,
    number,
    seconds,
    text,
    unix_time,
    words,
)
from vcycle.errors import ConfigProblem

SPACE_NAME = r"[a-z0-9.-]+"
MACHINETYPE_NAME = r"[a-z0-9-]+"
API_NAME = r"[a-z0-9_]+"
DEMAND_NAME = r"[a-z0-9._-]+"
COUNT_LIMIT = 10**9  # processors and counts: far above any site, small enough for arithmetic to stay quick


def capacity_types(value: str) -> tuple[str, ...]:
    """Capacity types in order of preference, each once: spot, on-demand."""
    found = tuple(word.lower() for word in value.split())
    for word in found:
        if word not in CAPACITY_TYPES:
            raise ValueError(f"{word!r} is not a capacity type: use {' or '.join(CAPACITY_TYPES)}")
    if len(set(found)) < len(found):
        raise ValueError("names a capacity type twice")
    return found


def zone_names(value: str) -> tuple[str, ...]:
    """Availability zones in order of preference, each once."""
    found = words(value)
    for word in found:
        if "@" in word or "/" in word:
            raise ValueError(f"{word!r} is not a zone name")
    if len(set(found)) < len(found):
        raise ValueError("names a zone twice")
    return found


def offering_prices(value: str) -> tuple[tuple[Offering, float], ...]:
    """``OFFERING=PRICE ...``: what a machine-hour of each offering costs. An offering is written as in status
    (``m5.large``, ``m5.large@eu-west-1a``, ``m5.large/spot``, ``*/spot``): a part left out, or ``*``, is any."""
    found: list[tuple[Offering, float]] = []
    for word in value.replace(",", " ").split():
        pattern, sep, amount = word.partition("=")
        if not sep or not pattern or not amount:
            raise ValueError(f"{word!r} is not OFFERING=PRICE (m5.large/spot=0.035)")
        try:
            price = float(amount)
        except ValueError:
            raise ValueError(f"{word!r}: {amount!r} is not a price") from None
        if price != price or price < 0 or price == float("inf"):
            raise ValueError(f"{word!r}: a price is a finite number, 0 or more")
        parsed = Offering.parse(pattern)
        offering = Offering(None if parsed.flavor == "*" else parsed.flavor,
                            None if parsed.zone == "*" else parsed.zone, parsed.capacity)
        if any(o == offering for o, _ in found):
            raise ValueError(f"{pattern!r} is priced twice")
        found.append((offering, price))
    return tuple(found)


DATABASES = ("sqlite", "postgresql", "postgresql+psycopg")  # the state_url schemes the store speaks


def database_url(value: str) -> str:
    """An SQLAlchemy URL of a database the store can use: ``sqlite:///PATH`` or ``postgresql+psycopg://...``."""
    url = text(value)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in DATABASES:
        raise ValueError(f"{scheme if sep else url!r} is not a database vcycle can keep its state in: use "
                         "sqlite:////ABSOLUTE/PATH or postgresql+psycopg://USER@HOST/DATABASE")
    return url


def proxy_machinetype(value: str) -> tuple[str, int]:
    """``MACHINETYPE[:PORT]`` (port 280 by default) -> (machinetype, port)."""
    found = matching(MACHINETYPE_NAME + r"(:[0-9]+)?", "MACHINETYPE[:PORT]")(value)
    name, _, port = found.partition(":")
    return name, integer(1, 65535)(port) if port else 280


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The manager's own settings, from ``[settings]``."""

    state_url: str = key(database_url, "sqlite:////var/lib/vcycle/state.db",
                         "SQLAlchemy URL of the state store (any password in it is masked when shown)")
    state_dir: str = key(text, "/var/lib/vcycle", "directory of machinetype files, caches and joboutputs")
    cycle_seconds: int = key(seconds(1), 60, "seconds between the starts of two cycles")
    max_create_fraction: float = key(number(0.0, 1.0), 0.1,
                                     "share of a space's processors_limit that may be created in one cycle")
    starting_timeout_seconds: int | None = key(
        seconds(1), None, "the old vcycle's key: launch_timeout_seconds of every machinetype that sets none")
    request_timeout_seconds: int = key(seconds(1), 900,
                                       "a requested machine the cloud does not list after this is given up")
    deleting_timeout_seconds: int = key(seconds(1), 900,
                                        "a machine still listed this long after its delete is retried")
    delete_retry_seconds: int = key(seconds(1), 600, "the least time between two delete attempts of one machine")
    manager_name: str = key(text, None, "this manager's name in tags; default the host name")
    space_workers: int = key(integer(1, 256), 16, "spaces cycled at once")
    create_workers: int = key(integer(1, 256), 8, "cloud calls made at once within one space")
    space_processes: int = key(integer(1, 64), 1,
                               "worker processes the spaces are spread over (for many spaces on several cores)")
    full_sync_cycles: int = key(integer(1, 100000), 10,
                                "a space's sync looks at every record once in this many cycles, and between them only "
                                "at what changed (1: every cycle)")
    # Managers sharing one PostgreSQL store hold each space under a lease (vcycle/loop/leases.py).
    lease_seconds: float = key(number(2.0, 3600.0), 15.0, "a space's lease lasts this long unless renewed; a "
                               "manager gone this long has its spaces taken over (stores shared by managers)")
    lease_renew_seconds: float = key(number(0.5, 1200.0), 5.0,
                                     "a manager renews its leases this often (at most a third of lease_seconds)")
    # The HTTPS endpoint (vcycle serve, or inside vcycle daemon when https_listen is set).
    https_listen: tuple[str, int] | None = key(host_port, None,
                                               "HOST:PORT the HTTPS endpoint listens on; unset = no endpoint")
    https_cert: str | None = key(text, None, "PEM file of the endpoint's certificate (and chain)")
    https_key: str | None = key(text, None, "PEM file of the endpoint's private key")
    https_client_ca: str | None = key(
        text, None, "CA file or directory (e.g. /etc/grid-security/certificates) for X.509 client certificates")
    operator_token: str | None = key(
        text, None, "bearer token for the operator API; needed unless the endpoint listens on loopback only",
        secret=True)
    trusted_proxies: tuple[str, ...] = key(words, (),
                                           "addresses of reverse proxies whose client-DN header is trusted")
    trusted_proxy_dn_header: str = key(
        text, "X-SSL-Client-S-DN", "header in which a trusted reverse proxy passes the client certificate's DN")
    joboutputs_dir: str = key(text, None, "where machines' joboutputs are kept; default STATE_DIR/joboutputs")
    joboutputs_in_store: bool = key(
        boolean, False, "keep joboutputs in the state store rather than joboutputs_dir, so that endpoints on "
        "several hosts sharing one PostgreSQL store serve the same files")
    joboutputs_max_file_bytes: int = key(integer(1), 10 * 1024 * 1024, "largest joboutputs file accepted")
    joboutputs_max_machine_bytes: int = key(integer(1), 100 * 1024 * 1024,
                                            "most joboutputs bytes kept for one machine")
    machine_requests_per_minute: int = key(
        integer(1), 600, "requests one machine may make to the endpoint per minute (bursts of a tenth of it allowed)")
    heartbeat_flush_seconds: float = key(number(0.05, 60.0), 1.0,
                                         "heartbeats received are written to the store in one batch this often")
    history_days: int = key(integer(1, 3660), 14, "days of the status page's time series kept in the store")
    # Accounting: an APEL record for every machine that ran at least fizzle_seconds (vcycle/accounting/).
    apel_outgoing_dir: str | None = key(
        text, None, "the APEL client's outgoing message queue (dirq) that ssmsend reads, e.g. "
        "/var/spool/apel/outgoing; records go there for spaces with gocdb_sitename; unset = none sent")
    apel_archive_dir: str | None = key(text, None, "a dirq queue keeping a copy of every APEL message; default "
                                "STATE_DIR/apel-archive")
    budget_per_month: float | None = key(
        number(0.0), None, "money every space's machines may cost in a calendar month (UTC), paced over the month "
        "(needs prices: offering_prices or price_per_hour)")
    file: str = ""  # where [settings] is, for messages about its keys


@dataclass(frozen=True, slots=True, kw_only=True)
class MachinetypeConfig:
    """A ``[machinetype SPACE NAME]`` section, with its space's defaults applied."""

    space: str = ""
    name: str = ""
    file: str = ""
    directory: str = ""  # machinetype files: x509 proxies, user_data files
    root_image: str | None = key(text, None, "image: a path, an http(s) URL, or image:NAME of one in the cloud")
    cernvm_signing_dn: str | None = key(text, None, "regular expression the CernVM image signer's DN must match")
    flavor_names: tuple[str, ...] = key(words, None, "flavors to choose from, first fitting wins; default the space's")
    zones: tuple[str, ...] = key(zone_names, (), "zones to make machines in, in order; a create finding no "
                                 "capacity in one falls through to the next; default the cloud's choice")
    capacity_types: tuple[str, ...] = key(capacity_types, (), "spot, on-demand, in order: the offerings of the "
                                          "first come before any of the next; default the connector's")
    min_processors: int = key(integer(1, COUNT_LIMIT), 1, "processors of a machine, at least")
    price_per_hour: float | None = key(number(0.0), None, "what one of its machines costs an hour, where its "
                                       "space's offering_prices name none of its offerings")
    max_processors: int | None = key(integer(1, COUNT_LIMIT), None, "processors of a machine, at most")
    disk_gb_per_processor: int = key(integer(0, COUNT_LIMIT), 40, "boot disk per processor where the cloud needs one")
    volume_gb_per_processor: int = key(integer(0, COUNT_LIMIT), None,
                                       "a boot volume of this many GB per processor; default the space's")
    hs06_per_processor: float | None = key(number(0.0), None, "HEPSPEC06 per processor: MJF, shares, accounting")
    mb_per_processor: int = key(integer(1, COUNT_LIMIT), 2048, "memory per processor (MJF max_rss_bytes)")
    target_share: float = key(number(0.0), 0.0, "relative share, weighted by hs06; 0 = never created")
    backoff_seconds: int = key(seconds(0), REQUIRED, "no creation this long after an abort")
    max_backoff_seconds: int = key(seconds(0), 1800, "each abort in a row (after the last hold ended) doubles "
                                   "backoff_seconds and offering_cooldown_seconds, up to this")
    backoff_reset_seconds: int = key(seconds(1), 10800, "this long without a failure, the doubling starts again")
    launch_health_window: int = key(integer(1, 20), 4, "the last launches that decide the machinetype's health")
    launch_health_failures: int = key(integer(1, 20), 2, "this many failed launches in the window, the newest "
                                      "among them: unhealthy, one probe machine per offering_cooldown_seconds")
    fizzle_seconds: int = key(seconds(0), REQUIRED, "a machine stopping sooner than this counts as an abort")
    processors_limit: int | None = key(integer(0, COUNT_LIMIT), None, "processors of this machinetype, at most")
    max_starting_processors: int | None = key(integer(0, COUNT_LIMIT), None,
                                              "processors still starting, at most; default processors_limit")
    max_wallclock_seconds: int = key(seconds(1), 86400, "machines are deleted after this; MJF shutdowntime")
    heartbeat_file: str | None = key(matching(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a plain file name"), None,
                                     "a joboutputs file the machine must keep writing")
    heartbeat_seconds: int = key(seconds(0), 0, "heartbeat_file older than this: deleted (0 = it must exist)")
    max_stall_kill_fraction: float = key(
        number(0.0, 1.0), 0.2, "more of its running machines than this going stale at once (an endpoint down?): "
        "none is deleted for its heartbeat until they beat again or an operator confirms")
    cvmfs_proxy_machinetype: tuple[str, int] | None = key(
        proxy_machinetype, None, "MACHINETYPE[:PORT] whose heartbeating machines are the cvmfs proxies")
    https_x509dn: str | None = key(text, None, "the DN allowed to act for these machines on the endpoint")
    accounting_fqan: str | None = key(text, None, "FQAN in accounting records")
    user_data: str = key(text, REQUIRED, "template(s): paths, http(s) URLs or shipped names")
    user_data_proxy: bool = key(boolean, False, "give the machines an X.509 proxy made from x509cert.pem")
    legacy_proxy: bool = key(boolean, False, "a Globus legacy proxy instead of an RFC 3820 one")
    root_public_key: str | None = key(text, None, "ssh public key file installed as a keypair")
    demand: str | None = key(matching(DEMAND_NAME, "a demand section name"), None,
                             "the [demand NAME] whose idle work decides how many machines are made")
    jobs_per_machine: int | None = key(integer(1, COUNT_LIMIT), None,
                                       "idle jobs one machine takes (default its processors)")
    ramp_up_attenuation: float = key(number(1.0, 1000.0), 1.0, "each cycle, make at most 1/N of the machines the "
                                     "idle jobs still need (GlideinWMS-style ramp-up); 1 = all at once")
    retire_idle_seconds: int = key(
        seconds(0), 0, "drain a machine whose batch daemon had no work this long while there are more idle machines "
        "than idle jobs need; 0 = never")
    retire_timeout_seconds: int = key(seconds(1), 3600, "a draining machine is deleted after this at most")
    retire_after_create_seconds: int = key(seconds(0), 600, "no idle machine is retired this long after a create")
    retire_wait_cycles: int = key(integer(1, 1000), 3, "idle jobs that fell by more than half retire nothing "
                                  "until they stay down this many cycles")
    max_disrupting: Budget = key(budget, Budget(percent=10.0), "machines retiring at once (idle, an operator's "
                                 "drain), as N or a percentage of the machinetype's working machines")
    launch_timeout_seconds: int | None = key(
        seconds(1), None, "a machine still starting this long after its creation is deleted with '700 Failed to "
        "start', an abort; default [settings] starting_timeout_seconds, else 300")
    register_timeout_seconds: int = key(
        seconds(0), 900, "a running machine whose batch daemon has not registered (or, with heartbeat_file, that "
        "sent no heartbeat) this long after it started is deleted, an abort; 0 = never")
    first_job_timeout_seconds: int = key(
        seconds(0), 1800, "a registered machine whose batch daemon has run no job this long while idle jobs wait is "
        "deleted with '700 Ran no job', an abort (HTCondor, Slurm); 0 = never")
    offering_cooldown_seconds: int = key(seconds(0), 180, "no new machine on an offering (flavor, zone, capacity "
                                         "type) this long after it had no capacity or an interruption notice")
    max_interruption_fraction: float = key(
        number(0.0, 1.0), 0.5, "interrupted machines are not aborts, unless more than this share of the "
        "machinetype's machines of the last hour (3 at least) were interrupted")
    user_data_options: Mapping[str, str] = field(default_factory=dict)  # user_data_option_XXX -> value
    user_data_files: Mapping[str, str] = field(default_factory=dict)  # user_data_file_XXX -> path
    connector: Any = None  # the keys its space's connector adds (its own declaration), or None
    source: Any = None  # the keys its demand source adds (its own declaration), or None
    made_by: str = ""  # the fingerprint of what it makes now (core/drift.py), set by the loader


@dataclass(frozen=True, slots=True, kw_only=True)
class SpaceConfig:
    """A ``[space NAME]`` section and its machinetypes."""

    name: str = ""
    file: str = ""
    api: str = key(matching(API_NAME, "an api name (a-z, 0-9, _)"), REQUIRED, "the connector: openstack, ec2, ...")
    api_version: str | None = key(matching(r"[a-z0-9._-]+", "an api version (a-z, 0-9, ., -, _)"), None,
                                  "a connector-specific API version")
    processors_limit: int | None = key(integer(0, COUNT_LIMIT), None,
                                       "no creation while the space's machines hold this many processors")
    max_disrupting: Budget = key(budget, Budget(percent=10.0), "machines retiring at once in the space, as N or a "
                                 "percentage of its working machines")
    flavor_names: tuple[str, ...] = key(words, (), "default flavors of its machinetypes")
    volume_gb_per_processor: int = key(integer(0, COUNT_LIMIT), 0, "default boot volume per processor; 0 = none")
    shutdown_time: datetime | None = key(unix_time, None, "Unix time capping every machine's shutdown time")
    gocdb_sitename: str | None = key(text, None, "the site name in accounting and ##user_data_site##")
    vacmon_hostport: tuple[tuple[str, int], ...] = key(host_ports, (), "HOST:PORT ... of VacMon listeners")
    https_host: str = key(text, None, "host in the URLs given to machines; default the manager's name")
    https_port: int = key(integer(1, 65535), 443, "port in the URLs given to machines")
    cleanup_hours: int = key(integer(0, 10 * 366 * 24), 72,
                             "records, reports and joboutputs of deleted machines are kept this long")
    api_timeout_seconds: float = key(number(1.0, 3600.0), 60.0, "the longest one call to the cloud may take, its "
                                     "retries included; a cycle stops waiting for it then")
    offering_prices: tuple[tuple[Offering, float], ...] = key(
        offering_prices, (), "OFFERING=PRICE ...: a machine-hour's price; the most specific match wins, and the "
        "cheapest offering per hs06 is tried first where all are priced")
    max_cost_per_hour: float | None = key(number(0.0), None,
                                          "no create that takes what the space's machines cost an hour above this")
    budget_per_month: float | None = key(number(0.0), None, "money the space's machines may cost in a calendar "
                                         "month (UTC), paced: never spent faster than what is left allows")
    machinetypes: Mapping[str, MachinetypeConfig] = field(default_factory=dict)
    connector: Any = None  # the keys its connector adds (its own declaration)
    runs_script: bool = False  # its connector runs the user-data as a script (ConnectorPlugin.runs_script)

    @property
    def site(self) -> str:
        """The site name in templates and accounting: gocdb_sitename, else the space's name."""
        return self.gocdb_sitename or self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandConfig:
    """A ``[demand NAME]`` section: where a machinetype's demand comes from."""

    name: str = ""
    file: str = ""
    type: str = key(text, REQUIRED, "the kind of source: file, command, htcondor, dirac, sitedirector, ...")
    options: Any = None  # the keys of its type (the source's own declaration)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, valid by construction."""

    settings: Settings
    spaces: Mapping[str, SpaceConfig]
    demands: Mapping[str, DemandConfig]
    files: tuple[str, ...]
    warnings: tuple[ConfigProblem, ...] = ()  # things worth a word that do not stop vcycle
