"""``python -m wmap``: the ``wmap`` command."""

import sys

from wmap.cli import main

sys.exit(main())
