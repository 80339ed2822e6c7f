"""`python -m shipyard.workloads.serve MODEL_DIR [flags]`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
