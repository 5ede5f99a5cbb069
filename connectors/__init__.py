"""Connectors: one module per cloud API, found by name and imported lazily.

Each connector module declares ``PLUGIN`` (a ``ConnectorPlugin``: its keys, its user-data limit and
``make``). Built-in connectors are registered here by dotted path; others arrive through the
``vcycle.connectors`` entry-point group. Only the modules of the apis a configuration names are ever
imported, so an OpenStack-only site never imports boto3.
"""

from __future__ import annotations

from vcycle.connectors.base import ConnectorPlugin
from vcycle.plugins import Registry

REGISTRY: Registry[ConnectorPlugin] = Registry(ConnectorPlugin, "vcycle.connectors", {
    "azure": "vcycle.connectors.azure",
    "ec2": "vcycle.connectors.ec2",
    "fake": "vcycle.testing",
    "kubernetes": "vcycle.connectors.kubernetes",
    "libcloud": "vcycle.connectors.libcloud",
    "local": "vcycle.connectors.local",
    "openstack": "vcycle.connectors.openstack",
})
