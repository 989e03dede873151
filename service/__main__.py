"""``python -m service`` is the ``rtserve`` command."""

import sys

from service.cli import main

sys.exit(main())
