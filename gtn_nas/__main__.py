"""``python -m gtn_nas``: the ``gtn-nas`` command line, for when the console script is not on
``PATH`` (e.g. ``python -m gtn_nas --version``)."""

from __future__ import annotations

import sys

from gtn_nas.cli import main

if __name__ == "__main__":
    sys.exit(main())
