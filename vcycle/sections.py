"""The core keys of each configuration section, and the compatibility table.

Meanings and defaults follow the original vcycle (vcycle.conf(5), see
docs/vcycle-compat.md). Connector-specific keys are not here: each connector
declares its own (``vcycle.connectors.<api>.OPTIONS``).

Declarations only: no file reading, no logging.
"""

from __future__ import annotations

from vcycle.options import (
    Option,
    boolean,
    choice,
    host_port,
    host_ports,
    integer,
    matching,
    number,
    options,
    text,
    unix_time,
    words,
)

SPACE_NAME = r"[a-z0-9.-]+"
MACHINETYPE_NAME = r"[a-z0-9-]+"
API_NAME = r"[a-z0-9_]+"
DEMAND_NAME = r"[a-z0-9._-]+"
OPTION_SUFFIX = r"[a-z0-9_]+"

SETTINGS = options(
    Option("state_url", text, "sqlite:////var/lib/vcycle/state.db", secret=True,
           help="SQLAlchemy URL of the state store"),
    Option("state_dir", text, "/var/lib/vcycle", help="directory of machinetype files, caches and joboutputs"),
    Option("cycle_seconds", integer(1), 60, help="seconds between the starts of two cycles"),
    Option("max_create_fraction", number(0.0, 1.0), 0.1,
           help="share of a space's processors_limit that may be created in one cycle"),
    Option("starting_timeout_seconds", integer(1), 3600,
           help="a machine still starting after this is deleted with '700 Failed to start'"),
    Option("request_timeout_seconds", integer(1), 900,
           help="a requested machine the cloud does not list after this is given up"),
    Option("deleting_timeout_seconds", integer(1), 900,
           help="a machine still listed this long after its delete is retried"),
    Option("delete_retry_seconds", integer(1), 600,
           help="the least time between two delete attempts of one machine"),
    Option("manager_name", text, None, help="this manager's name in tags; default the host name"),
    Option("space_workers", integer(1, 256), 16, help="spaces cycled at once"),
    Option("create_workers", integer(1, 256), 8, help="cloud calls made at once within one space"),
    Option("space_processes", integer(1, 64), 1,
           help="worker processes the spaces are spread over (for many spaces on several cores)"),
    # The HTTPS endpoint (vcycle serve, or inside vcycle daemon when https_listen is set).
    Option("https_listen", host_port, None, help="HOST:PORT the HTTPS endpoint listens on; unset = no endpoint"),
    Option("https_cert", text, None, help="PEM file of the endpoint's certificate (and chain)"),
    Option("https_key", text, None, help="PEM file of the endpoint's private key"),
    Option("https_client_ca", text, None,
           help="CA file or directory (e.g. /etc/grid-security/certificates) for X.509 client certificates"),
    Option("operator_token", text, None, secret=True,
           help="bearer token for the operator API; needed unless the endpoint listens on loopback only"),
    Option("trusted_proxies", words, (), help="addresses of reverse proxies whose client-DN header is trusted"),
    Option("trusted_proxy_dn_header", text, "X-SSL-Client-S-DN",
           help="header in which a trusted reverse proxy passes the verified client certificate's DN"),
    Option("joboutputs_dir", text, None, help="where machines' joboutputs are kept; default STATE_DIR/joboutputs"),
    Option("joboutputs_max_file_bytes", integer(1), 10 * 1024 * 1024, help="largest joboutputs file accepted"),
    Option("joboutputs_max_machine_bytes", integer(1), 100 * 1024 * 1024,
           help="most joboutputs bytes kept for one machine"),
    Option("machine_requests_per_minute", integer(1), 600,
           help="requests one machine may make to the endpoint per minute (bursts of a tenth of it allowed)"),
    Option("heartbeat_flush_seconds", number(0.05, 60.0), 1.0,
           help="heartbeats received are written to the store in one batch this often"),
)

SPACE = options(
    Option("api", matching(API_NAME, "an api name (a-z, 0-9, _)"), required=True),
    Option("api_version", matching(r"[a-z0-9._-]+", "an api version (a-z, 0-9, ., -, _)")),
    Option("processors_limit", integer(0)),
    Option("flavor_names", words, ()),
    Option("volume_gb_per_processor", integer(0), 0),
    Option("shutdown_time", unix_time),
    Option("gocdb_sitename", text),
    Option("vacmon_hostport", host_ports, ()),
    Option("https_host", text),
    Option("https_port", integer(1, 65535), 443),
    Option("cleanup_hours", integer(0), 72),
)

MACHINETYPE = options(
    Option("root_image", text),
    Option("cernvm_signing_dn", text),
    Option("flavor_names", words),
    Option("min_processors", integer(1), 1),
    Option("max_processors", integer(1)),
    Option("disk_gb_per_processor", integer(0), 40),
    Option("volume_gb_per_processor", integer(0)),
    Option("hs06_per_processor", number(0.0)),
    Option("mb_per_processor", integer(1), 2048),
    Option("target_share", number(0.0), 0.0),
    Option("backoff_seconds", integer(0), required=True),
    Option("fizzle_seconds", integer(0), required=True),
    Option("processors_limit", integer(0)),
    Option("max_starting_processors", integer(0)),
    Option("max_wallclock_seconds", integer(1), 86400),
    Option("heartbeat_file", matching(r"[A-Za-z0-9][A-Za-z0-9._-]*", "a plain file name")),
    Option("heartbeat_seconds", integer(0), 0),
    Option("cvmfs_proxy_machinetype", matching(MACHINETYPE_NAME + r"(:[0-9]+)?", "MACHINETYPE[:PORT]")),
    Option("https_x509dn", text),
    Option("accounting_fqan", text),
    Option("user_data", text, required=True),
    Option("user_data_proxy", boolean, False),
    Option("legacy_proxy", boolean, False),
    Option("root_public_key", text),
    Option("demand", matching(DEMAND_NAME, "a demand section name")),
    Option("jobs_per_machine", integer(1)),
    Option("htcondor_constraint", text, help="ClassAd expression selecting the HTCondor jobs this machinetype serves"),
    Option("retire_idle_seconds", integer(0), 0,
           help="drain a machine whose startd had no claimed slot this long while there are more idle machines "
                "than idle jobs need; 0 = never"),
    Option("retire_timeout_seconds", integer(1), 3600, help="a draining machine is deleted after this at most"),
    Option("register_timeout_seconds", integer(0), 0,
           help="delete a running machine whose startd has not joined the pool after this; 0 = never"),
    # The CE this machinetype is to DIRAC's Matcher ([demand NAME] type = dirac), as a SiteDirector queue.
    Option("dirac_site", text, help="the DIRAC site name, e.g. LCG.CERN.cern; default the space's name"),
    Option("dirac_ce", text, help="the CE name jobs may ask for (GridCE); default the space's name"),
    Option("dirac_queue", text, "default", help="the queue name"),
    Option("dirac_tags", words, (), help="tags the machines offer (Tag); N-processor machines add NProcessors"),
    Option("dirac_required_tags", words, (), help="tags a job must have to be matched (RequiredTag)"),
    Option("dirac_max_cpu_time", integer(1), 2880,
           help="the queue's maxCPUTime in minutes; with dirac_si00 it gives the CPUTime jobs are matched to"),
    Option("dirac_si00", integer(1), help="SI00 of one processor; default 250 x hs06_per_processor, else 2500"),
    Option("dirac_max_ram_mb", integer(1), help="MaxRAM offered; default mb_per_processor x processors"),
    Option("dirac_platform", text, help="the DIRAC platform the machines offer"),
    Option("dirac_vo", text, help="count only jobs of this VO; default the demand section's vo"),
    Option("dirac_owner_group", words, (), help="count only jobs of these DIRAC groups"),
)

VACUUM_PIPE = options(
    Option("vacuum_pipe_url", text, required=True),
    Option("target_share", number(0.0), 0.0),
)

MIN_POLL_SECONDS = 0.5  # a demand source watched between cycles (poll_seconds) is asked at most this often
DEMAND_TYPES = ("file", "command", "htcondor", "dirac", "sitedirector")
DEMAND_COMMON = options(Option("type", choice(*DEMAND_TYPES), required=True))
DEMAND = {
    "file": options(Option("path", text, required=True)),
    "command": options(
        Option("command", text, required=True),
        Option("timeout_seconds", integer(1), 60),
    ),
    "htcondor": options(
        Option("collector", text, help="the pool's collector, HOST[:PORT]; default HTCondor's COLLECTOR_HOST"),
        Option("schedds", words, (), help="schedd names to ask; default every schedd the collector knows"),
        Option("constraint", text, help="a ClassAd expression every counted job must match"),
        Option("min_idle_seconds", integer(0), 0, help="jobs idle for less than this are not counted yet"),
        Option("method", choice("auto", "bindings", "commands"), "auto",
               help="the htcondor2 bindings, or condor_q and condor_status -json; auto = bindings if installed"),
        Option("timeout_seconds", integer(1), 60, help="how long one query may take"),
    ),
    "dirac": options(
        Option("configuration", words, (),
               help="DIRAC configuration files the client reads (its dirac.cfg); needed unless matcher_url is set"),
        Option("matcher_url", text, help="the Matcher service, dips://HOST:PORT/WorkloadManagement/Matcher"),
        Option("host_cert", text, "/etc/grid-security/hostcert.pem", help="the host certificate DIRAC trusts"),
        Option("host_key", text, "/etc/grid-security/hostkey.pem", help="its key"),
        Option("ca_dir", text, "/etc/grid-security/certificates", help="the CA certificates directory"),
        Option("vo", text, help="count only jobs of this VO's groups (as DIRAC's SiteDirector does)"),
        Option("python", text, help="a Python with DIRAC installed; default the one vcycle runs under"),
        Option("timeout_seconds", integer(1), 60, help="how long one question to DIRAC may take"),
        Option("poll_seconds", number(0.0), 0.0,
               help="also ask this often between cycles and start a cycle at once when waiting jobs appear; "
                    "0 = ask once per cycle"),
    ),
    "sitedirector": options(
        Option("request_timeout_seconds", integer(1), 3600,
               help="a pilot DIRAC submitted that got no machine within this is given up (Aborted in DIRAC)"),
        Option("poll_seconds", number(0.0), 5.0,
               help="look this often for new pilots between cycles and start a cycle at once for them; 0 = never"),
    ),
}

# Old names -> new names, by section kind. One table; each use warns once.
DEPRECATED: dict[str, dict[str, str]] = {
    "space": {
        "max_processors": "processors_limit",
        "tenancy_name": "project_name",
    },
    "machinetype": {
        "flavor_name": "flavor_names",
        "processors_per_machine": "min_processors",
        "cpu_per_machine": "min_processors",
        "x509dn": "https_x509dn",
    },
}

# Keys the old vcycle accepted that no longer have an effect: warn, do not fail.
NO_EFFECT: dict[str, dict[str, str]] = {
    "space": {},
    "machinetype": {
        "log_joboutputs": "joboutputs are kept by the HTTPS endpoint for cleanup_hours",
        "log_machineoutputs": "machineoutputs are no longer collected",
        "machineoutputs_days": "machineoutputs are no longer collected",
        "joboutputs_days": "use cleanup_hours on the space",
        "remote_joboutputs_url": "machines write joboutputs to this vcycle's HTTPS endpoint",
        "remote_joboutputs_cert": "machines write joboutputs to this vcycle's HTTPS endpoint",
        "remote_joboutputs_key": "machines write joboutputs to this vcycle's HTTPS endpoint",
        "user_data_proxy_cert": "use user_data_proxy = true with x509cert.pem and x509key.pem",
        "user_data_proxy_key": "use user_data_proxy = true with x509cert.pem and x509key.pem",
    },
}
