"""EC2 and EC2-compatible clouds through boto3: the options model.

The old vcycle's keys (url, access_key, secret_key, region) still work;
boto3's own credential chain (profile, environment, instance role) is
preferred. The connector itself arrives with the EC2 connector issue; this
module must not import boto3 at the top.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vcycle.options import ApiOptions, Option, boolean, number, options, text, words


def _check(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    if bool(values.get("access_key")) != bool(values.get("secret_key")):
        missing = "secret_key" if values.get("access_key") else "access_key"
        return [(missing, "access_key and secret_key must be given together")]
    return []


OPTIONS = ApiOptions(
    space=options(
        Option("url", text, help="endpoint; omitted = AWS's regional endpoint"),
        Option("region", text, "us-east-1"),
        Option("access_key", text, secret=True),
        Option("secret_key", text, secret=True),
        Option("profile", text),
        Option("subnet_ids", words, ()),
        Option("security_group_ids", words, ()),
        Option("key_name", text),
        Option("iam_instance_profile", text),
    ),
    machinetype=options(
        Option("spot", boolean, False),
        Option("spot_max_price", number(0.0)),
    ),
    no_effect={
        "version": "boto3 chooses the EC2 API version",
        "service": "boto3 signs requests for the ec2 service",
    },
    check=_check,
)
