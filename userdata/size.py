"""Fitting user-data into what a cloud accepts.

cloud-init reads gzip-compressed user-data (it looks for the gzip magic
bytes), so user-data larger than a cloud's limit is gzipped when that makes
it fit; otherwise it is refused before any cloud call.
"""

from __future__ import annotations

import gzip

from vcycle.errors import LaunchRejected


def fit_user_data(data: bytes, limit: int) -> bytes:
    """``data`` as is if it fits in ``limit`` bytes, else gzipped if that fits; LaunchRejected otherwise."""
    if len(data) <= limit:
        return data
    packed = gzip.compress(data, compresslevel=9, mtime=0)
    if len(packed) <= limit:
        return packed
    raise LaunchRejected(f"user-data is {len(data)} bytes ({len(packed)} gzipped), over the {limit} bytes "
                         f"this cloud accepts")
