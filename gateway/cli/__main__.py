"""`python -m gateway.cli …` is `gridgate …`."""

import sys

from gateway.cli import main

sys.exit(main())
