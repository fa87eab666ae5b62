"""``python -m sve`` runs the command line (see ``sve.cli``)."""

import sys

from sve.cli import main

sys.exit(main())
