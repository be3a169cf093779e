"""``python -m pipeline.cli``: the ``vigil`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
