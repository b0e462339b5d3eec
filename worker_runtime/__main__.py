"""`python -m worker_runtime start|dev module:function`, the same as `agent-worker`."""

import sys

from worker_runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
