"""``python -m groupinf`` is the ``groupinf`` command."""

import sys

from .cli import main

sys.exit(main())
