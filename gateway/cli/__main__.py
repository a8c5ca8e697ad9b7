"""`python -m gateway.cli …` is `gridgate …`."""

import sys

from gateway.cli.main import main

sys.exit(main())
