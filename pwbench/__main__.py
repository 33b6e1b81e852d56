"""`python -m pwbench ...`: the console script, for a machine where pwbench is on PYTHONPATH
rather than installed (e.g. a GPU box running a kernel bundle with a runtime-only TVM)."""

import sys

from pwbench.cli import main

sys.exit(main())
