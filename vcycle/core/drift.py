"""Drift: what made a machine, kept with it, against what its machinetype would make now.

A machine records a fingerprint of what made it (``MachineRecord.made_by``):
a hash of each part of its machinetype that shapes a machine, and of nothing
that differs from one machine to the next (names, tokens, times):

- ``image``: the root image reference (a name, a URL, a path);
- ``flavor``: the flavors to choose from and the machine's size (processors,
  memory, disk, volume);
- ``user-data``: the templates (their text, where it can be read when the
  configuration is; else their URL), the user_data options and files, the
  proxy and ssh key choices;
- ``options``: the connector's own keys of the space and machinetype
  (networks, zones, instance types, ...), secrets left out, and the
  endpoint settings a machine is given.

Limits, shares, timeouts and demand are rules vcycle applies, not what a
machine is: changing them drifts nothing. The fingerprint starts with its
hashing VERSION: a machine made under another version is not called drifted
(a new hashing rule does not roll every machine).

Pure: the configuration loader hands in the templates' text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vcycle.core.options import looks_secret, table
from vcycle.core.sections import MachinetypeConfig, SpaceConfig

VERSION = "1"
PARTS = ("image", "flavor", "user-data", "options")


def fingerprint(space: SpaceConfig, mt: MachinetypeConfig, templates: Sequence[str]) -> str:
    """``VERSION:image=H,flavor=H,user-data=H,options=H`` for what ``mt`` makes now; ``templates`` are the texts of
    its user_data sources, in order."""
    parts = {
        "image": [mt.root_image or ""],
        "flavor": [" ".join(mt.flavor_names or ()), str(mt.min_processors), str(mt.max_processors),
                   str(mt.mb_per_processor), str(mt.disk_gb_per_processor), str(mt.volume_gb_per_processor)],
        "user-data": [mt.user_data or "", *templates, *_pairs(_public(mt.user_data_options)),
                      *_pairs(mt.user_data_files), str(mt.user_data_proxy), str(mt.legacy_proxy),
                      mt.root_public_key or ""],
        "options": [*_pairs(_keys(space.connector)), *_pairs(_keys(mt.connector)), str(mt.cvmfs_proxy_machinetype),
                    mt.https_x509dn or "", mt.heartbeat_file or "", space.https_host, str(space.https_port)],
    }
    return VERSION + ":" + ",".join(f"{name}={_hash(parts[name])}" for name in PARTS)


def drifted(made_by: str | None, current: str) -> tuple[str, ...]:
    """The parts in which a machine made as ``made_by`` differs from ``current``; () when it does not, or when
    either is unknown or of another hashing version. A current machine (most of them) costs one comparison."""
    if not made_by or not current or made_by == current:
        return ()
    mine, now = _parse(made_by), _parse(current)
    if mine is None or now is None:
        return ()
    return tuple(part for part in PARTS if mine.get(part) != now.get(part))


def _parse(found: str) -> dict[str, str] | None:
    version, _, rest = found.partition(":")
    if version != VERSION:
        return None
    return dict(item.partition("=")[::2] for item in rest.split(","))


def _hash(values: Iterable[str]) -> str:
    return hashlib.sha256("\x00".join(values).encode()).hexdigest()[:12]


def _pairs(values: Mapping[str, Any]) -> list[str]:
    return [f"{k}={values[k]}" for k in sorted(values)]


def _public(values: Mapping[str, str]) -> dict[str, str]:
    """user_data options less the secret ones (a changed password is not a new machine)."""
    return {k: v for k, v in values.items() if not looks_secret(k)}


def _keys(options: object) -> dict[str, Any]:
    """A connector's keys of a section, less the secret ones."""
    if options is None:
        return {}
    return {name: getattr(options, name) for name, option in table(type(options)).items()
            if not option.secret and not looks_secret(name)}
