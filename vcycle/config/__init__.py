"""Configuration: vcycle's INI files read into the core's typed configuration (vcycle/core/sections.py).

``load_config`` (vcycle/config/load.py) reads a file set; ``compat`` holds the old vcycle's renamed and
retired keys; ``vacuum_pipe`` expands VO-published machinetypes.
"""

from vcycle.config.files import expand_paths
from vcycle.config.load import load_config

__all__ = ["expand_paths", "load_config"]
