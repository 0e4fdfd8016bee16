"""``python -m backstage``: the same as the ``backstage`` command."""

import sys

from .ops.cli import main

sys.exit(main())
