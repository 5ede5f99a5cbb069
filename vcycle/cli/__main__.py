"""``python -m vcycle.cli``: the ``vcycle`` command."""

import sys

from vcycle.cli.main import main

sys.exit(main())
