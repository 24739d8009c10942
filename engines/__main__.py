"""`python -m engines`: run one job spec from stdin, events on stdout (see engines.contract)."""

import sys

from engines.cli import main

if __name__ == "__main__":
    sys.exit(main())
