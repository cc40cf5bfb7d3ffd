"""Host folders handed to a container's non-root user (the image's uid 185, EMR's hadoop).

pytest makes its temporary folders 0700, and under a strict umask (077) every file written
into them is 0600: a bind mount shows the container those modes as they are.
"""

from __future__ import annotations

import os
from pathlib import Path


def share(path: Path, writable: bool = False) -> Path:
    """Make the tree at `path` readable (and, if `writable`, writable) by every user."""
    path.mkdir(parents=True, exist_ok=True)
    folder_mode, file_mode = (0o777, 0o666) if writable else (0o755, 0o644)
    for root, _folders, files in os.walk(path):
        os.chmod(root, folder_mode)
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)
    return path
