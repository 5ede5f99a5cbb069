"""The original vcycle's words that changed: deprecated keys renamed through one table, keys that no longer do
anything. Each use warns once (vcycle/config/load.py). Keys themselves are declared where their meaning
lives: the core's in vcycle/core/sections.py, each connector's and demand source's in its module.

Declarations only: no file reading, no logging.
"""

from __future__ import annotations

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
