"""A progress line for long work: images done, images/s, ETA (driver side)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Polls `done()` in a background thread and redraws one line on stderr.

    On a terminal the line is redrawn in place; in logs (CI, Kubernetes) a line is
    printed every `log_every` seconds instead.
    """

    def __init__(
        self,
        label: str,
        total: int,
        done: Callable[[], int],
        stream: TextIO = sys.stderr,
        interval: float = 0.5,
        log_every: float = 10.0,
    ) -> None:
        self.label, self.total, self._done = label, max(total, 1), done
        self._stream, self._interval, self._log_every = stream, interval, log_every
        self._tty = stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._draw(final=True)

    def line(self) -> str:
        done = min(self._done(), self.total)
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        filled = int(24 * done / self.total)
        bar = "#" * filled + "." * (24 - filled)
        eta_text = f"ETA {eta:5.0f}s" if eta == eta else "ETA     ?"
        return f"{self.label} [{bar}] {done:>7,}/{self.total:,} images {rate:6.1f} img/s {eta_text}"

    def _draw(self, final: bool = False) -> None:
        if self._tty:
            self._stream.write("\r" + self.line() + ("\n" if final else ""))
        elif final:
            self._stream.write(self.line() + "\n")
        self._stream.flush()

    def _loop(self) -> None:
        last_log = time.monotonic()
        while not self._stop.wait(self._interval):
            if self._tty:
                self._draw()
            elif time.monotonic() - last_log >= self._log_every:
                self._stream.write(self.line() + "\n")
                self._stream.flush()
                last_log = time.monotonic()
