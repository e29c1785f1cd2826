"""One progress bar over a whole benchmark run: tqdm when it is installed, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``advance()`` once per request; ``phase(text)`` when a new phase starts; ``note(text)`` for a
    line that must not garble the bar (printed even when disabled). ``total`` may grow as phases
    are planned."""

    def __init__(self, total: int, enabled: bool = True, line_every: float = 5.0) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.line_every = line_every
        self._label = ""
        self._last_line = 0.0
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, unit="req", dynamic_ncols=True, mininterval=0.5, leave=True)

    def phase(self, label: str) -> None:
        self._label = label
        if self._bar is not None:
            self._bar.set_description_str(label, refresh=True)
        elif self.enabled:
            self._line()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last_line >= self.line_every:
            self._line()

    def add(self, n: int) -> None:
        self.total += n
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def _line(self) -> None:
        self._last_line = time.monotonic()
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"[{self.done}/{self.total}{share}] {self._label}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
