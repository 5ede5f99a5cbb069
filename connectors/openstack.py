"""OpenStack (Nova, Glance, Keystone) through openstacksdk: the options model.

The keys are those of the original vcycle's OpenStack plugin, plus ``cloud``
to take credentials from a clouds.yaml. The connector itself arrives with the
OpenStack connector issue; this module must not import openstacksdk at the
top, so that validating a configuration never needs the SDK.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from vcycle.options import ApiOptions, Option, choice, integer, options, text, words


def _base64(value: str) -> str:
    try:
        base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 (encode it with: echo -n 'PASSword' | base64)") from None
    return value.strip()


_CREDENTIAL_PAIRS = (("username", "password_base64"), ("cred_id", "cred_secret"))


def _check(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    if values.get("cloud"):
        return []
    problems: list[tuple[str, str]] = []
    if not values.get("url"):
        problems.append(("url", "is required (the Keystone endpoint) unless cloud = NAME is given"))
    given = [pair for pair in _CREDENTIAL_PAIRS if values.get(pair[0]) or values.get(pair[1])]
    for first, second in given:
        for key, other in ((first, second), (second, first)):
            if not values.get(key):
                problems.append((key, f"is required with {other}"))
    if not given:
        problems.append(("username", "credentials are required: username + password_base64, "
                                     "cred_id + cred_secret, or cloud"))
    elif values.get("username") and not values.get("project_name"):
        problems.append(("project_name", "is required with username + password_base64"))
    return problems


MAX_USER_DATA_BYTES = 65535  # Nova

OPTIONS = ApiOptions(
    space=options(
        Option("url", text),
        Option("cloud", text, help="a cloud of clouds.yaml; replaces url and credentials"),
        Option("project_name", text),
        Option("domain_name", text, "default"),
        Option("region", text),
        Option("zones", words, ()),
        Option("security_groups", words, ()),
        Option("network_uuid", text),
        Option("glance_api", choice("1", "2"), "2"),
        Option("username", text),
        Option("password_base64", _base64, secret=True),
        Option("cred_id", text),
        Option("cred_secret", text, secret=True),
        Option("credential_warning_days", integer(0), 14),
    ),
    check=_check,
)
