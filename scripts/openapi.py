"""Write etc/openapi.json from the endpoint's document (make openapi)."""

import json
import pathlib

from vcycle.web.openapi import document

path = pathlib.Path(__file__).resolve().parents[1] / "etc" / "openapi.json"
path.write_text(json.dumps(document(), indent=2, sort_keys=True) + "\n")
print(f"wrote {path}")
