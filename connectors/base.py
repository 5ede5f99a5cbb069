"""The connector protocol: what vcycle asks of every cloud.

Each method says whether it is required or optional. Only vcycle's own
errors leave a connector (CloudUnavailable, QuotaExceeded, LaunchRejected,
NotFound), raised ``from`` the SDK's error. The SDK client is handed in by
the connector module's ``make_connector`` so that tests can point it at an
emulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from vcycle.errors import CloudUnavailable
from vcycle.model import CloudMachine, LaunchSpec

if TYPE_CHECKING:  # pragma: no cover - types only
    from vcycle.config import Settings, SpaceConfig


class Connector(Protocol):
    """One space of one cloud."""

    api: str
    #: The largest user-data, in bytes before any encoding, that the cloud accepts.
    max_user_data_bytes: int

    def list_machines(self) -> list[CloudMachine]:
        """Required. Every machine in the space, ours (with owner tags) and foreign, in one
        listing (paginated inside if need be). Raises CloudUnavailable."""
        ...

    def create_machine(self, spec: LaunchSpec) -> CloudMachine:
        """Required. Create one machine tagged with ``spec.owner``; idempotent on ``spec.name``
        and ``spec.request_id``: a retried create never makes two machines. Raises QuotaExceeded,
        LaunchRejected or CloudUnavailable."""
        ...

    def delete_machine(self, machine_id: str) -> None:
        """Required. Delete a machine; an absent machine is success. Raises CloudUnavailable."""
        ...

    def capacity(self) -> int | None:
        """Optional (return None). The space's processor quota, counting foreign machines."""
        ...

    def flavors(self) -> Mapping[str, int]:
        """Optional (return {}). Flavor name -> vcpus, looked up at most once per cycle."""
        ...

    # Optional, looked up with getattr: ``notices(now) -> list[str]``, warnings for the cycle report
    # and ``vcycle status`` (an expiring credential); cheap, as it is called every cycle.


class ConnectorFactory(Protocol):
    def __call__(self, space: SpaceConfig, settings: Settings) -> Connector: ...


def make_connector(space: SpaceConfig, settings: Settings) -> Connector:
    """The connector of ``space``'s api, imported lazily."""
    import vcycle.connectors as registry

    module = registry.load_api(space.api)
    factory: ConnectorFactory | None = getattr(module, "make_connector", None)
    if factory is None:
        raise CloudUnavailable(f"api {space.api} has no connector in this version of vcycle yet")
    return factory(space, settings)
