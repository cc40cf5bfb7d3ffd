"""Native libraries' console chatter, kept off the user's console.

TensorFlow and LiteRT write banners and notices from C++ straight to file descriptors 1 and
2 (oneDNN notices, "Created TensorFlow Lite XNNPACK delegate", ~260 lines of TensorSpec
from a TFLite conversion), where Python's own redirection does not reach. Engine export
(driver) and load (each Python worker) run inside `native_output_quieted`: the chatter is
dropped when the block succeeds and shown when it fails, since it may then explain why.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_output_quieted() -> Iterator[None]:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 1)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        else:
            _restore(saved)


def _restore(saved: list[int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for target, fd in zip((1, 2), saved):
        os.dup2(fd, target)
        os.close(fd)
