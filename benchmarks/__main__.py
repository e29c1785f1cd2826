"""``python -m benchmarks <scenario>``: the same tool as ``parley bench <scenario>``."""

import sys

from .cli import main

sys.exit(main(prog="python -m benchmarks"))
