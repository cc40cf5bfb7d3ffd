"""SIGINT and SIGTERM during a run: finish the current step, then stop cleanly.

The handler only records the request; the run checks it (`check`) between steps and twice a
second while featurizing, and raises `Stopped` there, from ordinary Python code: raising
inside a signal handler would land in the middle of a Py4J read and break the connection
every later call (stopping the query, stopping Spark) needs. A second signal ends the
process at once. Only the command line installs the handlers; a library caller keeps its own.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from featurizer.errors import Stopped

HANDLED = (signal.SIGINT, signal.SIGTERM)
_requested: int | None = None


def install() -> None:
    global _requested
    _requested = None
    for signum in HANDLED:
        signal.signal(signum, _request)


def installed() -> bool:
    return signal.getsignal(signal.SIGINT) is _request


def requested() -> bool:
    return _requested is not None


def check() -> None:
    """Raise Stopped if a signal asked the run to stop."""
    if _requested is not None:
        raise Stopped(_requested)


def _request(signum: int, frame: Any) -> None:
    global _requested
    if _requested is not None:  # the second one: no more waiting
        for handled in HANDLED:
            signal.signal(handled, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _requested = signum
    print(
        f"featurizer: {signal.Signals(signum).name} received: stopping after the current "
        f"step (send it again to stop at once)",
        file=sys.stderr,
        flush=True,
    )
