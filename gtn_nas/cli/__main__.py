"""``python -m gtn_nas.cli``: the same as the ``gtn-nas`` console script."""

from __future__ import annotations

import sys

from gtn_nas.cli import main

if __name__ == "__main__":
    sys.exit(main())
