"""Asks DIRAC's Matcher for the task queues that match CE descriptions: run in a Python with DIRAC.

vcycle's ``[demand NAME] type = dirac`` starts this as a process of its own
(``python -m vcycle.demand.dirac_worker``), because DIRAC's client keeps its
configuration, credentials and logging in process-wide globals: one worker
per demand section keeps each section's DIRAC to itself, and a DIRAC that
hangs is ended by killing the worker, not vcycle.

Protocol, one JSON document per line. The first line read is the settings
(``configuration`` files, ``matcher_url``, ``host_cert``, ``host_key``,
``ca_dir``); the worker answers ``{"ready": true}`` or ``{"error": ...}``.
Then each request ``{"queues": {KEY: CE description}, "vo": {KEY: VO}}`` is
answered ``{"ok": true, "queues": {KEY: [{"jobs": n, "tags": [...],
"group": g}, ...]}}`` or ``{"ok": false, "error": ...}``. DIRAC's own log
goes to stderr; the protocol has stdout to itself.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO


def _answer(out: TextIO, document: dict[str, Any]) -> None:
    out.write(json.dumps(document) + "\n")
    out.flush()


def _initialize(settings: dict[str, Any]) -> Any:
    """DIRAC initialised with the host's credentials; the Matcher's client."""
    import DIRAC

    extra: dict[str, Any] = {"DIRAC": {"Security": {"CALocation": settings["ca_dir"]}}}
    if settings.get("matcher_url"):
        extra["Systems"] = {"WorkloadManagement": {"URLs": {"Matcher": settings["matcher_url"]}}}
    os.environ.setdefault("X509_CERT_DIR", settings["ca_dir"])
    DIRAC.initialize(require_auth=False, extra_config_files=settings.get("configuration") or [],
                     extra_config=extra, host_credentials=(settings["host_cert"], settings["host_key"]),
                     log_level=settings.get("log_level", "ERROR"))
    from DIRAC.WorkloadManagementSystem.Client.MatcherClient import MatcherClient

    return MatcherClient(useCertificates=True)


def _vo_of(group: str, cache: dict[str, str]) -> str:
    """The VO of a DIRAC group, from the Registry of DIRAC's configuration. ValueError without a Registry:
    every job would silently not count."""
    if group not in cache:
        from DIRAC.ConfigurationSystem.Client.Helpers import Registry

        if not cache and not Registry.getAllGroups():
            raise ValueError("a VO is given but DIRAC's configuration has no Registry to tell the VO of the jobs' "
                             "groups: set configuration to a dirac.cfg that has it (or names the CS servers)")
        cache[group] = Registry.getVOForGroup(group) or ""
    return cache[group]


def answer(matcher: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The matching task queues of each CE description, filtered by VO as DIRAC's SiteDirector does."""
    found: dict[str, list[dict[str, Any]]] = {}
    vos: dict[str, str] = {}
    for key, description in request["queues"].items():
        result = matcher.getMatchingTaskQueues(description)
        if not result["OK"]:
            return {"ok": False, "error": f"getMatchingTaskQueues for {key}: {result['Message']}"}
        wanted_vo = request.get("vo", {}).get(key)
        queues = []
        for tq in result["Value"].values():
            group = str(tq.get("OwnerGroup", ""))
            if wanted_vo and _vo_of(group, vos) != wanted_vo:
                continue
            tags = tq.get("Tags", [])
            queues.append({"jobs": int(tq.get("Jobs", 0)), "tags": [tags] if isinstance(tags, str) else list(tags),
                           "group": group})
        found[key] = queues
    return {"ok": True, "queues": found}


def main() -> int:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the protocol's; DIRAC's log goes to stderr
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        matcher = _initialize(json.loads(sys.stdin.readline()))
    except Exception as exc:  # noqa: BLE001 - any failure to start is told to vcycle, in one line
        _answer(out, {"error": f"DIRAC could not be initialised: {exc!r}"})
        return 1
    _answer(out, {"ready": True})
    for line in sys.stdin:
        try:
            reply = answer(matcher, json.loads(line))
        except Exception as exc:  # noqa: BLE001 - the per-request boundary: tell vcycle, keep serving
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _answer(out, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
