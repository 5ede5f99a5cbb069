"""Demand read from a JSON document on disk, re-read at every call.

Whatever writes the file (a cron job, a batch-system exporter, a test)
replaces it atomically; a missing or broken file makes demand unknown.
"""

from __future__ import annotations

import json

from vcycle.demand import parse_document
from vcycle.errors import DemandError
from vcycle.model import Demand


class FileDemand:
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path

    def demand(self, space: str) -> dict[str, Demand]:
        try:
            with open(self.path, encoding="utf-8") as stream:
                document = json.load(stream)
        except OSError as exc:
            raise DemandError(f"demand {self.name}: cannot read {self.path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise DemandError(f"demand {self.name}: {self.path} is not valid JSON: {exc}") from exc
        return parse_document(document, self.path).get(space, {})
