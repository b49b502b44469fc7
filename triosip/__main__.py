"""``python -m triosip``: the same as the ``triosip`` command."""

import sys

from triosip.cli import main

sys.exit(main())
