"""``[demand NAME] type = command``: demand printed by a program as the same JSON document a file source reads.

The program runs with a timeout and no shell; a non-zero exit, a timeout or
bad output makes demand unknown, with the first line of what it said.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass

from vcycle.core.model import Demand
from vcycle.core.options import REQUIRED, key, options_of, seconds, text
from vcycle.core.sections import DemandConfig
from vcycle.demand.base import DemandPlugin, SourceContext
from vcycle.demand.document import parse_document
from vcycle.errors import DemandError


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSection:
    """The keys of a ``type = command`` section."""

    command: str = key(text, REQUIRED, "the program (and its arguments) printing the JSON document; no shell")
    timeout_seconds: int = key(seconds(1), 60, "how long the program may take")


class CommandDemand:
    def __init__(self, name: str, command: str, timeout_seconds: int) -> None:
        self.name = name
        self.argv = shlex.split(command)
        self.timeout_seconds = timeout_seconds

    def demand(self, space: str) -> dict[str, Demand]:
        where = f"demand {self.name}: {self.argv[0]}"
        try:
            done = subprocess.run(self.argv, capture_output=True, text=True, timeout=self.timeout_seconds, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DemandError(f"{where}: no answer within {self.timeout_seconds}s") from exc
        except OSError as exc:
            raise DemandError(f"{where}: cannot run: {exc.strerror}") from exc
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise DemandError(f"{where}: exit status {done.returncode}: {said}")
        try:
            document = json.loads(done.stdout)
        except ValueError as exc:
            raise DemandError(f"{where}: output is not valid JSON: {exc}") from exc
        return parse_document(document, where).get(space, {})


def make(config: DemandConfig, context: SourceContext) -> CommandDemand:
    options = options_of(config.options, CommandSection)
    return CommandDemand(config.name, options.command, options.timeout_seconds)


PLUGIN = DemandPlugin(make=make, section=CommandSection)
