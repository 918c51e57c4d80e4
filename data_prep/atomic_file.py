"""Writing files atomically: readers see the old file or the complete new one, never a part."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_file(dest: str | Path):
    """Yield a temporary path beside ``dest``; rename it over ``dest`` if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask. It can only be read by setting it: the stand-in is the most
    restrictive mask, so a file another thread creates meanwhile is private, not public."""
    mask = os.umask(0o777)
    os.umask(mask)
    return mask
