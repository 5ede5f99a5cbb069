"""The one exception tree of vcycle.

Every error vcycle raises on purpose is one of these; SDK and library errors
are caught at the boundary that called them and re-raised as one of these
with ``raise ... from``::

    VcycleError
     +-- ConfigError          fatal at start-up; carries every ConfigProblem
     +-- PipeError            a vacuum pipe cannot be fetched or read: its machinetypes are not made
     +-- StateError
     |    +-- InvalidTransition   a move the machine state table forbids
     |    +-- StaleState          a concurrent writer got there first
     |    |    +-- Fenced             a write for a space whose lease this manager no longer holds: refused
     |    +-- LockHeld            another vcycle process holds the lock: not acting twice
     +-- DemandError          a demand source failed: demand is unknown
     +-- StoreError           the state store cannot be opened or used
     +-- RenderError          a machinetype's user-data cannot be rendered: none of it is created
     +-- DirectorError        the Vcycle CE cannot act for DIRAC (its queue's mapping, configuration, store)
     +-- CommandFailed        a ``vcycle`` command ends with an exit status, its reason already printed
     +-- Refused              the HTTPS endpoint refuses a request: a 4xx (or 503/507) and a reason
     |    +-- JoboutputsError     a joboutputs file not accepted, kept or read
     +-- ConnectorError       the cloud said no, or did not answer
          +-- CloudUnavailable    skip this space this cycle; a create is left to the next sync (transient)
          |    +-- Unauthorized       the credentials were refused: a create backs off, one call a cycle at most
          |    +-- Throttled          slow down: no call to the space until its Retry-After (or a cycle) passed
          |    +-- LeaseLost          this manager no longer holds the space's lease: no call made, none more
     |         +-- HandedOn           this manager is stopping: the space goes to another, no call more here
          +-- QuotaExceeded       the space holds creates of that size until a listing shows room
          |    +-- NoCapacity         this offering (flavor) has no room now: cool it, try the next
          +-- LaunchRejected      bad image/flavor/user-data: back off, log loudly
          |    +-- ImageError         a root image that cannot be had or trusted
          +-- NotFound            the machine is not there (success for delete)

What a connector error means for the cycle is a property of its class, not of
the code that catches it: ``kind`` (its word in reports and metrics),
``backoff`` (a failed create backs off its machinetype), ``made_nothing`` (the
cloud surely made nothing: the request is closed at once; otherwise it is left
for the next sync to resolve, and a failed delete is retried) and ``space_wide``
(the space's own trouble: no other create of the cycle calls the cloud).

This module must not import anything from the rest of vcycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class VcycleError(Exception):
    """Base class of every error vcycle raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in the configuration, located as precisely as known."""

    file: str
    section: str
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file or "<configuration>"
        if self.section:
            where += f": [{self.section}]"
        if self.key:
            where += f" {self.key}"
        return f"{where}: {self.message}"


class ConfigError(VcycleError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration error(s):\n{lines}")


class PipeError(VcycleError):
    """A vacuum pipe cannot be fetched or read, or is not a pipe."""


class StateError(VcycleError):
    """Base class of machine state and store consistency errors."""


class InvalidTransition(StateError):
    """A machine state change that the state table does not allow."""


class StaleState(StateError):
    """Another writer changed the space's state since it was read."""


class Fenced(StaleState):
    """A write for a space under a lease epoch that is no longer this manager's: refused without effect."""


class LockHeld(StateError):
    """Another vcycle process holds the lock."""


class DemandError(VcycleError):
    """A demand source could not tell the demand; it is unknown, not zero."""


class StoreError(VcycleError):
    """The state store cannot be opened, migrated or used."""


class NoStore(StoreError):
    """A store opened only to read is not there yet: no cycle has made it."""


class RenderError(VcycleError):
    """A machinetype's user-data cannot be rendered; no machine of it is created this cycle."""


class DirectorError(VcycleError):
    """The Vcycle CE cannot act: bad CE parameters, a configuration or store problem. The message says which."""


class CommandFailed(VcycleError):
    """A ``vcycle`` command ends with ``status`` (its reason was printed where it arose)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"exit status {status}")
        self.status = status


class Refused(VcycleError):
    """A request to the HTTPS endpoint answered with a 4xx (or 503/507) status and a reason."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


class JoboutputsError(Refused):
    """A joboutputs file that cannot be accepted, kept or read; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)


class ConnectorError(VcycleError):
    """Base class of the errors a connector may raise."""

    kind = "connector"  # its word in reports and metrics
    backoff = False  # a create failing with it backs off its machinetype
    made_nothing = False  # the cloud surely made nothing: a create failing with it is closed at once
    space_wide = False  # the space's own trouble: after it, no other create of the cycle calls the cloud


class CloudUnavailable(ConnectorError):
    """The cloud cannot be reached or answers 5xx: skip the space this cycle."""

    kind = "unavailable"


class Unauthorized(CloudUnavailable):
    """The cloud refused the space's credentials (expired, revoked, not allowed): nothing was made. A listing is
    skipped as for an unreachable cloud; a create fails and backs off its machinetype, and no other create of
    the cycle calls the cloud (no retry storm). The reason says what to fix."""

    kind = "auth"
    backoff = True
    made_nothing = True
    space_wide = True


class Throttled(CloudUnavailable):
    """The cloud asks vcycle to slow down (HTTP 429, EC2's RequestLimitExceeded once botocore's own jittered
    retries are spent): nothing was made, no other create of the cycle calls the cloud, and the space is left
    alone for ``retry_after`` seconds (its Retry-After), or one cycle where it names none."""

    kind = "throttled"
    made_nothing = True
    space_wide = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LeaseLost(CloudUnavailable):
    """This manager's lease of the space has lapsed or passed to another manager: the call was not made, and no
    other call of the cycle is made for the space."""

    kind = "lease_lost"
    made_nothing = True
    space_wide = True


class HandedOn(LeaseLost):
    """This manager was told to stop (SIGTERM) while it cycled the space: the call was not made, the cycle ends at
    once and the space is handed on to another manager, which finishes what this one began."""

    kind = "handed_on"


class QuotaExceeded(ConnectorError):
    """The cloud refused a create for lack of quota: nothing was made, and the space holds creates of that size
    or more until a listing shows fewer processors held (a machine ended) or the cloud's quota shows room."""

    kind = "quota"
    made_nothing = True


class NoCapacity(QuotaExceeded):
    """The cloud has no capacity for this offering (flavor or instance type, zone, spot) now: the create falls
    through to the machinetype's next offering, and this one cools for offering_cooldown_seconds."""

    kind = "capacity"


class LaunchRejected(ConnectorError):
    """The cloud refused a create because of what was asked (image, flavor, user-data)."""

    kind = "rejected"
    backoff = True
    made_nothing = True


class ImageError(LaunchRejected):
    """A root image that cannot be had or trusted: no machine is made from it."""


class NotFound(ConnectorError):
    """The machine does not exist in the cloud."""

    kind = "not_found"
