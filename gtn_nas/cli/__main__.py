"""``python -m gtn_nas.cli``: the same as the ``gtn-nas`` console script."""

import sys

from gtn_nas.cli import main

sys.exit(main())
