"""A progress bar on stderr for work that runs longer than a second or two.

It draws nothing for the first ``delay`` seconds (so quick runs stay quiet) and nothing at
all when stderr is not a terminal, unless ``enabled=True``.  Standard library only.

    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(3, "run", file=out, enabled=True, delay=0) as bar:
    ...     for _ in range(3):
    ...         bar.advance()
    >>> out.getvalue().rstrip().rsplit("\\r", 1)[-1]
    'run [##############################] 3/3 100%'
"""
from __future__ import annotations

import sys
import time
from typing import IO, Optional

__all__ = ["Progress"]


class Progress:
    """``Progress(total, label)``; call :meth:`advance` per unit of work (or ``set``).

    Redraws at most ten times a second.  Use as a context manager: leaving it ends the line.
    """

    WIDTH = 30

    def __init__(self, total: int, label: str = "", *, file: Optional[IO[str]] = None,
                 enabled: Optional[bool] = None, delay: float = 1.5) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.file = sys.stderr if file is None else file
        if enabled is None:
            enabled = bool(getattr(self.file, "isatty", lambda: False)())
        self.enabled = enabled
        self.done = 0
        self._start = time.monotonic()
        self._delay = delay
        self._last = -1.0
        self._drawn = False

    def advance(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = min(int(done), self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self._delay or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        fill = self.WIDTH * self.done // self.total
        self.file.write(f"\r{self.label} [{'#' * fill}{'.' * (self.WIDTH - fill)}] "
                        f"{self.done}/{self.total} {100 * self.done // self.total}%")
        self.file.flush()
        self._drawn = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._drawn:
            self.file.write("\n")
            self.file.flush()
