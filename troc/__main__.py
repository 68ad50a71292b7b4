"""``python -m troc``: the same as the ``troc`` command."""

from troc.cli.main import main

main()
