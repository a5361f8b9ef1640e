"""``python -m quota ...`` runs the ``quota`` command line (for machines where the package is on the path
but not installed)."""

import sys

from quota.cli.main import main

sys.exit(main())
