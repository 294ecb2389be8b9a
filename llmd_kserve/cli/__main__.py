"""``python -m llmd_kserve.cli``: the same as the ``llmd-kserve`` command."""

import sys

from llmd_kserve.cli import main

sys.exit(main())
