"""`python -m parley.fake_llm --port 0` runs the fake provider server."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
