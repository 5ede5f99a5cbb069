"""An Azure space on the fake ARM (tests/fakearm.py) for the Azure tests: its keys, a connector with the real SDK
clients and the real azure-identity credential (a service principal whose secret the fake's token endpoint
checks), and the lines of a vcycle.conf for ``vcycle cycle --once``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakearm import Arm

from vcycle.connectors.azure import AzureConnector, AzureMachinetype, AzureSpace, make_clients

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
GROUP = "vcycle-rg"
LOCATION = "westeurope"
SUBNET = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/net-rg/providers/Microsoft.Network/virtualNetworks/vnet/"
          "subnets/pilots")
IMAGE = "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake vcycle@test"


def files(arm: Arm, directory: Path) -> tuple[Path, Path]:
    """The client secret file and the SSH public key file of a space."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "client-secret"
    secret.write_text(arm.client_secret + "\n")
    secret.chmod(0o600)
    key = directory / "id.pub"
    key.write_text(SSH_KEY + "\n")
    return secret, key


def keys(arm: Arm, directory: Path) -> dict[str, str]:
    """The keys of a space on this fake (its secret and SSH key files written in ``directory``)."""
    secret, key = files(arm, directory)
    return {"subscription_id": SUBSCRIPTION, "resource_group": GROUP, "location": LOCATION, "subnet_id": SUBNET,
            "tenant_id": arm.tenant, "client_id": arm.client_id, "client_secret_file": str(secret),
            "base_url": arm.url, "authority": arm.url, "ca_file": str(arm.ca_file), "ssh_public_key_file": str(key)}


def options(arm: Arm, directory: Path, **extra: Any) -> AzureSpace:
    return AzureSpace(**(keys(arm, directory) | extra))


def connector(arm: Arm, directory: Path, space: str = "contract", *,
              machinetypes: dict[str, AzureMachinetype] | None = None, flavors: tuple[str, ...] = (),
              timeout: float = 30, **extra: Any) -> AzureConnector:
    given = options(arm, directory, **extra)
    clients = make_clients(given, timeout)
    return AzureConnector(clients.compute, clients.network, space, given, machinetypes=machinetypes,
                          flavors=flavors, ssh_key=SSH_KEY)


def space_lines(arm: Arm, directory: Path, **extra: str) -> str:
    """The keys of a ``[space ...]`` section for this fake, one per line."""
    return "".join(f"{k} = {v}\n" for k, v in ({"api": "azure"} | keys(arm, directory) | extra).items())
