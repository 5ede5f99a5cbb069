"""Shared set-up for the endpoint's tests: a real SQLite store, live machines with tokens, the real app."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from starlette.testclient import TestClient
from vctest import T0, config_text, load_text, rec

from vcycle.core import mjf
from vcycle.core.identity import new_identity
from vcycle.core.model import MachineRecord
from vcycle.core.sections import Config
from vcycle.core.states import MachineState
from vcycle.loop.launch import entropy
from vcycle.store import Store
from vcycle.testing import FakeClock
from vcycle.web import app as web_app
from vcycle.web.endpoint import Endpoint

DN = "/DC=org/DC=example/OU=robots/CN=pilot robot"


@dataclass
class Site:
    """A configured space 'sp' with machinetypes 'mt' (heartbeat file, x509 DN) and 'proxy'."""

    config: Config
    store: Store
    clock: FakeClock
    endpoint: Endpoint
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def machine(self, name: str, state: MachineState = MachineState.RUNNING, mt: str = "mt",
                refresh: bool = True, **extra: object) -> MachineRecord:
        """A live machine in the store, with its token kept in ``tokens``."""
        who = new_identity("mt", entropy())
        token, token_hash = who.token, who.token_hash
        self.tokens[name] = token
        features = mjf.features(self.config.spaces["sp"].machinetypes[mt], 2, T0, T0 + timedelta(hours=24), None)
        record = rec(name, state, mt=mt, processors=2, token_hash=token_hash, features=json.dumps(features),
                     shutdown_at=T0 + timedelta(hours=24), started_at=T0, **extra)
        state_now = self.store.load("sp")
        self.store.write("sp", state_now.version, [record])
        if refresh:
            self.endpoint.directory.refresh()
        return record

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


def make_site(tmp_path: Path, settings: dict[str, object] | None = None, listen: str = "127.0.0.1",
              machinetypes: dict[str, dict[str, object]] | None = None, extra: str = "") -> Site:
    tmp_path.mkdir(parents=True, exist_ok=True)
    template = tmp_path / "ud.sh.j2"
    template.write_text("#!/bin/sh\necho {{ machine }} {{ token }} {{ joboutputs_url }}\n")
    text = config_text(machinetypes=machinetypes or {
        "mt": {"heartbeat_file": "vm-heartbeat", "heartbeat_seconds": 600, "https_x509dn": DN,
               "user_data": str(template)},
        "squid": {"heartbeat_file": "vm-heartbeat", "heartbeat_seconds": 600, "user_data": str(template)},
    }, settings={"state_dir": tmp_path, "state_url": f"sqlite:///{tmp_path}/state.db", **(settings or {})},
        extra=extra)
    config = load_text(text)
    store = Store.open(config.settings.state_url)
    clock = FakeClock(T0)
    endpoint = web_app.build(config, store, clock=clock, render=web_app.user_data_renderer(), listen_host=listen)
    client = TestClient(web_app.create_app(endpoint, upkeep=False), raise_server_exceptions=False)
    return Site(config, store, clock, endpoint, client)
