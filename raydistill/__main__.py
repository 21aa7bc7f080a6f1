"""`python -m raydistill` runs the CLI."""

import sys

from raydistill.cli import main

sys.exit(main())
