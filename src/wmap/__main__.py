"""``python -m wmap``: the ``wmap`` command."""

from wmap.cli import run

run()
